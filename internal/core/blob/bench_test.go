package blob_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// BenchmarkDeltas measures one execution's JSON Patch operation turned into its delta and
// applied, on a blob of the given content size: each costs a pass over the document.
func BenchmarkDeltas(b *testing.B) {
	for _, size := range []int{100, 100 << 10} {
		b.Run(map[int]string{100: "100B", 100 << 10: "100KiB"}[size], func(b *testing.B) {
			content, err := json.Marshal(strings.Repeat("a", size))
			require.NoError(b, err)
			var s blob.State
			ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs.b1.created", Body: []byte(`{"blob_id": "b1", "content": ` + string(content) + `, "metadata": {"type": "chapter"}}`), MsgID: "e1"})
			require.NoError(b, err)
			dec, err := blob.Decide(s, ev, t0)
			require.NoError(b, err)
			require.NoError(b, s.Apply(dec.Delta))
			out := map[string]any{"delta_operations": []any{map[string]any{"op": "add", "path": "/metadata/summary", "value": "s"}}}
			b.ResetTimer()
			for i := range b.N {
				res, err := blob.Deltas(s, blob.Execution{ExecutionID: events.ID("x", string(rune(i))), BlobID: "b1", BaseVersion: 1, Output: out}, t0)
				if err != nil {
					b.Fatal(err)
				}
				next := s.Clone()
				if err := next.Apply(res.Deltas[0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
