package execution_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// BenchmarkApplyDecide measures the core's cost per input of a three-step execution that
// succeeds (started and three reports): Apply the input, Decide, Apply the decisions, as the
// runtime does on its cached state. The decode sub-benchmark JSON-decodes the same inputs, as
// a baseline measured in the same run: quote apply+decide as a ratio of it. fold replays the
// whole history from the queued event, compiling the pinned workflow, as a cold load does.
func BenchmarkApplyDecide(b *testing.B) {
	r := newRun(b, threeSteps, withInput(map[string]any{"blob_id": "b1"}))
	for _, in := range []input{
		start(),
		ok("load", map[string]any{"content": "It was a dark night."}),
		ok("expand", map[string]any{"text": "It was a dark and stormy night.", "request_id": "r1"}),
		ok("save", map[string]any{"id": "b2"}),
	} {
		r.feed(in(r))
	}
	require.Equal(b, execution.StatusCompleted, r.s.Status)
	inputs := r.log[1:] // after the queued event, which the runtime applies once per load
	base, err := execution.Fold(r.history[:1])
	require.NoError(b, err)
	var encoded [][]byte
	for _, l := range inputs {
		encoded = append(encoded, marshal(b, l.in))
	}
	perEvent := func(b *testing.B, n int) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	}

	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, raw := range encoded {
				if _, err := events.Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		}
		perEvent(b, len(encoded))
	})

	b.Run("apply+decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s := base.Clone()
			for _, l := range inputs {
				if err := s.Apply(l.in); err != nil {
					b.Fatal(err)
				}
				out, err := execution.Decide(s, l.in, l.now)
				if err != nil {
					b.Fatal(err)
				}
				for _, ev := range out {
					if err := s.Apply(ev); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		perEvent(b, len(inputs))
	})

	b.Run("fold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := execution.Fold(r.history); err != nil {
				b.Fatal(err)
			}
		}
		perEvent(b, len(r.history))
	})
}
