package execution_test

import (
	"cmp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// undoable runs a, which can be undone, then b, which gets one attempt.
const undoable = `
id: undoable
steps:
  - id: a
    type: api_call
    service: svc
    endpoint: /a
    compensation: {service: svc, endpoint: /a, method: DELETE}
  - id: b
    type: api_call
    service: svc
    endpoint: /b
  - id: c
    type: api_call
    service: svc
    endpoint: /c
`

// TestHistoryBounds: a run whose history reaches its bounds stops with history_too_large,
// compensates like any failure (its compensations written past the bound), is neither re-run
// nor retried by hand, and folds to the same size from its stored history.
func TestHistoryBounds(t *testing.T) {
	big := map[string]any{"text": strings.Repeat("x", 2000)}
	tests := []struct {
		name string
		// events and bytes are the bounds for the test; 0 keeps the default.
		events   int
		bytes    int64
		workflow string
		opts     []queueOpt
		// drive feeds inputs until the execution has ended.
		drive func(r *run)
		// failedStep is the step that ends failed; compensated the steps undone.
		failedStep  string
		compensated []string
	}{
		{
			name:   "a step retried until the history holds 20 events",
			events: 20, workflow: withRetry(100),
			drive: func(r *run) {
				for r.s.Status == execution.StatusRunning {
					r.feed(reply("call", 503, nil)(r))
					if r.s.Status == execution.StatusRunning {
						r.feed(fire(events.TimerStepRetry, "call")(r))
					}
				}
			},
			failedStep: "call",
		},
		{
			name:  "large outputs reach 5000 bytes after a: b is not run, a is undone",
			bytes: 5000, workflow: undoable,
			drive: func(r *run) {
				r.feed(ok("a", big)(r))
				r.feed(compReply("a", 200)(r))
			},
			compensated: []string{"a"},
		},
		{
			name: "a retryable failure with re-runs left fails when its compensation reaches the bound",
			// The bound is set below, just past the history before the compensation's report.
			workflow: undoable, opts: []queueOpt{withMaxRetries(3)},
			drive: func(r *run) {
				r.feed(ok("a", map[string]any{"id": "a1"})(r))
				r.feed(reply("b", 503, nil)(r))
				require.Equal(r.t, execution.StatusCompensating, r.s.Status)
				execution.SetHistoryLimit(r.t, execution.MaxHistoryEvents, r.s.History().Bytes+1)
				r.feed(compReply("a", 200)(r))
			},
			failedStep: "b", compensated: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execution.SetHistoryLimit(t, cmp.Or(tt.events, execution.MaxHistoryEvents), cmp.Or(tt.bytes, execution.MaxHistoryBytes))
			r := newRun(t, tt.workflow, tt.opts...)
			r.feed(start()(r))
			tt.drive(r)

			require.Equal(t, execution.StatusFailed, r.s.Status, "stale: %+v", r.s.Stale)
			failed := find[*events.ExecutionFailed](r)
			require.Len(t, failed, 1)
			e := failed[0].Error
			assert.Equal(t, execution.CodeHistoryTooLarge, e.Code)
			assert.Contains(t, e.Message, "history has ")
			assert.False(t, failed[0].Retryable, "no retry can help")
			assert.Empty(t, find[*events.ExecutionRetryScheduled](r), "no re-run")
			var undone []string
			for _, c := range find[*events.CompensationScheduled](r) {
				undone = append(undone, c.StepID)
			}
			assert.Equal(t, tt.compensated, undone)
			for _, st := range r.s.Steps {
				if st.ID == tt.failedStep {
					assert.Equal(t, execution.StepFailed, st.Status, st.ID)
				} else if st.Status != execution.StepSucceeded {
					assert.Equal(t, execution.StepPending, st.Status, "%s never ran", st.ID)
				}
			}

			// The stored history folds to the same size, and it counts every recorded event.
			folded, err := execution.Fold(r.history)
			require.NoError(t, err)
			assert.Equal(t, r.s.History(), folded.History())
			assert.Equal(t, len(r.history), folded.History().Events)
			var bytes int64
			for _, ev := range r.history {
				bytes += int64(len(marshal(t, ev)))
			}
			assert.Equal(t, bytes, folded.History().Bytes)

			// A manual retry cannot start a run on a full history: it is stale.
			before := r.s.History()
			assert.Empty(t, r.feed(retry()(r)))
			assert.Equal(t, execution.StatusFailed, r.s.Status)
			require.NotEmpty(t, r.s.Stale)
			assert.Contains(t, r.s.Stale[len(r.s.Stale)-1].Reason, "history has reached its bounds")
			assert.Equal(t, before, r.s.History(), "a stale input is not counted")
		})
	}
}

// TestHistoryBoundsDefault: the default bounds leave an ordinary execution alone and count
// its history as the stream would hold it.
func TestHistoryBoundsDefault(t *testing.T) {
	r := newRun(t, threeSteps, withInput(map[string]any{"blob_id": "b1"}))
	r.feed(start()(r))
	r.feed(ok("load", map[string]any{"content": "c"})(r))
	r.feed(ok("expand", map[string]any{"text": "t", "request_id": "r1"})(r))
	r.feed(ok("save", map[string]any{"id": "b2"})(r))
	require.Equal(t, execution.StatusCompleted, r.s.Status)
	h := r.s.History()
	assert.Equal(t, len(r.history), h.Events)
	assert.False(t, r.s.HistoryWarning())
	assert.Positive(t, h.Bytes)

	// Half the bounds: the warning the runtime logs.
	execution.SetHistoryLimit(t, 2*h.Events, execution.MaxHistoryBytes)
	assert.True(t, r.s.HistoryWarning())
}
