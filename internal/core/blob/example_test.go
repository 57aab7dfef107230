package blob_test

import (
	"fmt"
	"time"

	"github.com/memmie/memmie/internal/core/blob"
)

// A client's created and updated events become versions 1 and 2; a completed execution's
// output becomes the next ones.
func ExampleDecide() {
	now := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	var s blob.State
	for _, m := range []blob.Message{
		{Subject: "memmie.blobs.b1.created", Body: []byte(`{"blob_id": "b1", "metadata": {"type": "chapter", "status": "draft"}}`), MsgID: "e1"},
		{Subject: "memmie.blobs.b1.updated", Body: []byte(`{"blob_id": "b1", "content": "It was a dark night.", "metadata": {"status": null}}`), MsgID: "e2"},
	} {
		ev, err := blob.Parse(m)
		if err != nil {
			panic(err) // a *blob.Refusal: dead-letter it
		}
		dec, err := blob.Decide(s, ev, now)
		if err != nil {
			panic(err)
		}
		if err := s.Apply(dec.Delta); err != nil {
			panic(err)
		}
		fmt.Println(dec.Delta.Version, dec.Delta.Type, string(dec.Delta.NewValue))
	}
	res, err := blob.Deltas(s, blob.Execution{ExecutionID: "x1", BlobID: "b1", BaseVersion: 2, Output: map[string]any{
		"delta_operations":    []any{map[string]any{"op": "add", "path": "/metadata/summary", "value": "night"}},
		"transformed_content": "It was a dark and stormy night.",
	}}, now)
	if err != nil {
		panic(err) // a *blob.Rejection: nothing is written
	}
	for _, d := range res.Deltas {
		if err := s.Apply(d); err != nil {
			panic(err)
		}
		fmt.Println(d.Version, d.Type, d.Path, string(d.NewValue))
	}
	fmt.Println(string(s.Content), string(s.Metadata))
	// Output:
	// 1 create {"content":null,"metadata":{"status":"draft","type":"chapter"}}
	// 2 update {"content":"It was a dark night.","metadata":{"type":"chapter"}}
	// 3 add /metadata/summary "night"
	// 4 transform /content "It was a dark and stormy night."
	// "It was a dark and stormy night." {"summary":"night","type":"chapter"}
}
