package blob_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// FuzzParseDecide feeds any body to Parse and Decide, on a blob that does not exist and on one
// that does: no panic, and a delta Decide returns always applies.
func FuzzParseDecide(f *testing.F) {
	for _, seed := range []string{chapter, `{"blob_id": "b1", "metadata": {"a": null}}`, `{"blob_id": "b1", "content": null}`,
		`{"specversion": "1.0", "id": "x", "data": {"blob_id": "b1"}}`, `{"blob_id": "b1", "metadata": {"x": "\u003c"}}`,
		`[`, `null`, `{"blob_id": "b1", "derived_from": {"blob_id": "p", "execution_id": "x", "depth": 2}}`} {
		for kind := range 3 {
			f.Add(uint8(kind), []byte(seed))
		}
	}
	kinds := []string{"created", "updated", "deleted"}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		ev, err := blob.Parse(blob.Message{Subject: subject("b1", kinds[int(kind)%3]), Body: body, MsgID: "m"})
		if err != nil {
			var refusal *blob.Refusal
			require.ErrorAs(t, err, &refusal)
			return
		}
		exists := blob.State{}
		_, deltas := history(t, "b1", in{"created", chapter, "e0"})
		require.NoError(t, exists.Apply(deltas[0]))
		for _, s := range []blob.State{{}, exists} {
			dec, err := blob.Decide(s, ev, t0)
			if err != nil {
				var refusal *blob.Refusal
				require.ErrorAs(t, err, &refusal)
				continue
			}
			require.False(t, dec.Duplicate)
			require.Equal(t, s.Version+1, dec.Delta.Version)
			require.NoError(t, s.Apply(dec.Delta))
			_, err = events.Marshal(events.Event{ID: dec.Delta.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Time: t0, Data: &dec.Delta})
			if err != nil {
				require.ErrorContains(t, err, "exceed the limit")
			}
		}
	})
}

// FuzzHistory plays a sequence of blob events and execution outputs, chosen by the fuzzer,
// through Decide, Deltas and Apply, as the writer does. Whatever the sequence: no panic,
// versions count from 1 with no gap, a duplicate appends nothing, and the fold of what was
// appended is the writer's state.
func FuzzHistory(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0, 0, 10, 10, 2, 22, 5, 13})
	f.Add([]byte{3, 0, 7, 7, 2, 2, 9, 1, 1})
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 64 {
			script = script[:64]
		}
		var s blob.State
		var appended []events.Delta
		at := t0
		for i, b := range script {
			at = at.Add(time.Second)
			before := s.Version
			var out []events.Delta
			if b%2 == 0 { // a blob event; ids repeat, so some are duplicates
				kind := []string{"created", "updated", "deleted"}[int(b/2)%3]
				body := bodies[int(b/6)%len(bodies)]
				ev, err := blob.Parse(blob.Message{Subject: subject("b1", kind), Body: []byte(body), MsgID: fmt.Sprintf("e%d", b%11)})
				if err != nil {
					continue
				}
				dec, err := blob.Decide(s, ev, at)
				if err != nil {
					var refusal *blob.Refusal
					require.ErrorAs(t, err, &refusal, "step %d", i)
					continue
				}
				if dec.Duplicate {
					require.LessOrEqual(t, dec.Version, s.Version)
					continue
				}
				out = append(out, dec.Delta)
			} else { // an execution's output; ids repeat, so some are delivered again
				x := blob.Execution{ExecutionID: fmt.Sprintf("x%d", b%5), BlobID: "b1", BaseVersion: min(s.Version, int64(b%3)),
					Output: outputs[int(b/2)%len(outputs)]}
				res, err := blob.Deltas(s, x, at)
				if err != nil {
					var rej *blob.Rejection
					require.ErrorAs(t, err, &rej, "step %d", i)
					continue
				}
				out = res.Deltas
			}
			for _, d := range out {
				require.Equal(t, s.Version+1, d.Version, "step %d: versions count with no gap", i)
				require.Less(t, d.BaseVersion, d.Version)
				require.NoError(t, s.Apply(d), "step %d", i)
				appended = append(appended, d)
			}
			require.Equal(t, before+int64(len(out)), s.Version)
		}
		for i, d := range appended {
			require.Equal(t, int64(i+1), d.Version)
		}
		folded, err := blob.Fold(appended)
		require.NoError(t, err)
		require.Equal(t, s, folded)
	})
}

var bodies = []string{
	chapter,
	`{"blob_id": "b1", "metadata": {"status": "final", "type": null}}`,
	`{"blob_id": "b1", "content": {"tags": ["a"], "n": 1e400}}`,
	`{"blob_id": "b1", "content": [1, 2, 3], "metadata": {"z": {"y": 1}}}`,
	`{"blob_id": "b1"}`,
}

var outputs = func() []any {
	var out []any
	for _, s := range []string{
		`{"delta_operations": [{"op": "add", "path": "/metadata/n", "value": 1}]}`,
		`{"delta_operations": [{"op": "add", "path": "/content/tags/-", "value": "x"}, {"op": "remove", "path": "/metadata/type"}]}`,
		`{"delta_operations": [{"op": "test", "path": "/metadata/status", "value": "draft"}, {"op": "replace", "path": "/metadata/status", "value": "done"}]}`,
		`{"transformed_content": {"tags": []}, "created_blobs": [{"content": 1}]}`,
		`{"delta_operations": [{"op": "move", "from": "/metadata/z", "path": "/content"}], "transformed_content": "t"}`,
		`{"delta_operations": [{"op": "copy", "from": "/content", "path": "/metadata/copy"}]}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			panic(err)
		}
		out = append(out, v)
	}
	return out
}()

// FuzzDeltas feeds any output to Deltas: no panic, and what it returns applies, in order.
func FuzzDeltas(f *testing.F) {
	for _, o := range []string{`{"delta_operations": [{"op": "add", "path": "/metadata/a", "value": 1}]}`,
		`{"transformed_content": "x", "created_blobs": [{"content": null, "metadata": {}}]}`,
		`{"delta_operations": [{"op": "move", "from": "/metadata", "path": "/metadata/x"}]}`,
		`{"delta_operations": [{"op": "copy", "from": "/content", "path": "/content/0"}]}`} {
		f.Add([]byte(o))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var output any
		if json.Unmarshal(raw, &output) != nil {
			return
		}
		s, _ := history(t, "b1", in{"created", `{"blob_id": "b1", "content": {"a": [1, {"b": 2}]}, "metadata": {"type": "x"}}`, "e1"})
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: "x1", BlobID: "b1", BaseVersion: 1, Output: output}, t0)
		if err != nil {
			var rej *blob.Rejection
			require.ErrorAs(t, err, &rej)
			return
		}
		for _, d := range res.Deltas {
			require.NoError(t, s.Apply(d))
		}
	})
}
