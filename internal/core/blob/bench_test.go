package blob_test

import (
	"encoding/json"
	"runtime"
	"strconv"
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

// longHistory is a blob created and then changed n-1 times, half by client updates (each with
// its own event id) and half by executions' operations (each its own execution), so that the
// state records as many event ids and executions as a long-lived document does.
func longHistory(n int) []events.Delta {
	deltas := make([]events.Delta, n)
	for i := range deltas {
		v := int64(i + 1)
		d := events.Delta{ID: events.ID("b1", strconv.Itoa(i)), BlobID: "b1", Version: v, BaseVersion: v - 1, Timestamp: t0}
		switch {
		case i == 0:
			d.Type, d.NewValue = events.DeltaCreate, json.RawMessage(`{"content":0,"metadata":{"type":"chapter"}}`)
			d.Metadata.SourceEventID = "e0"
		case i%2 == 1:
			d.Type, d.NewValue = events.DeltaUpdate, json.RawMessage(`{"content":`+strconv.Itoa(i)+`}`)
			d.Metadata.SourceEventID = events.ID("event", strconv.Itoa(i))
		default:
			d.Type, d.Path, d.NewValue = events.DeltaReplace, "/metadata/type", json.RawMessage(`"t`+strconv.Itoa(i)+`"`)
			d.Metadata.ExecutionID = events.ID("execution", strconv.Itoa(i))
		}
		deltas[i] = d
	}
	return deltas
}

// BenchmarkFold folds histories of 1k, 10k and 100k deltas: ns/delta must stay about the same,
// since a blob's history is folded on every cache miss. B/delta is the heap the folded state
// holds per delta (its records of event ids and executions), measured once, with the deltas
// themselves dropped as a load drops them.
func BenchmarkFold(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(strconv.Itoa(n/1000)+"k", func(b *testing.B) {
			held := heldPerDelta(b, n)
			deltas := longHistory(n)
			b.ResetTimer()
			for range b.N {
				if _, err := blob.Fold(deltas); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delta")
			b.ReportMetric(held, "B/delta")
		})
	}
}

func heldPerDelta(b *testing.B, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := blob.Fold(longHistory(n))
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}
