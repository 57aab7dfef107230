package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
)

// TestPendingRetrySurvivesRestart stops every process and the server while a step's retry
// backoff runs, starts them again on the same store, and expects the retry to happen: once
// with the timer held on the timers consumer (NakWithDelay), once as a JetStream message
// schedule.
func TestPendingRetrySurvivesRestart(t *testing.T) {
	tests := []struct {
		name string
		opt  option
	}{
		{"held with NakWithDelay", func(*engine.Config) {}},
		{"message schedule", func(c *engine.Config) { c.Timers.ScheduleAfter = 2 * time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := newService(t, func(_ call, n int) (int, any) {
				if n == 0 {
					return 503, map[string]any{"error": "busy"}
				}
				return 200, map[string]any{"ok": true}
			})
			h := newHarness(t, map[string]string{"svc": svc.URL}, tt.opt)
			h.register(`
id: retry_later
steps:
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    retry: {max_attempts: 2, backoff_ms: 3000, jitter: 0}
`)
			id := h.start("retry_later", nil)
			s := h.wait(id, "waiting for its retry", func(s *execution.State) bool {
				return s.Steps[0].Status == execution.StepRetryScheduled
			})
			due := s.Steps[0].RetryAt
			require.False(t, due.IsZero())

			stopped := h.restart()
			require.True(t, stopped.Before(due), "the retry was pending when every process stopped")

			s = h.waitEnd(id)
			require.Equal(t, execution.StatusCompleted, s.Status)
			calls := svc.callTimes()
			require.Len(t, calls, 2)
			secondCall := calls[1]
			assert.False(t, secondCall.Before(due), "the retry waited for its backoff: called %s, due %s", secondCall, due)
			assert.Equal(t, []events.Type{
				events.TypeExecutionQueued, events.TypeExecutionStarted,
				events.TypeStepScheduled, events.TypeStepReported, events.TypeStepRetryScheduled,
				events.TypeTimerFired, events.TypeStepScheduled, events.TypeStepReported, events.TypeStepSucceeded,
				events.TypeExecutionCompleted,
			}, h.types(id))
		})
	}
}

// TestQueueSurvivesRestart restarts while executions wait in the queue: the dispatcher
// rebuilds the queue from the stream and admits them.
func TestQueueSurvivesRestart(t *testing.T) {
	release := make(chan struct{})
	svc := newService(t, func(c call, _ int) (int, any) {
		select {
		case <-release:
		case <-c.ctx.Done():
			return 0, nil
		}
		return 200, map[string]any{}
	})
	h := newHarness(t, map[string]string{"svc": svc.URL}, withMaxRunning(1))
	h.register(`
id: one_call
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
    retry: {max_attempts: 3, backoff_ms: 100}
`)
	first := h.start("one_call", nil)
	svc.waitCalls(t, 1)
	second := h.start("one_call", nil)
	require.Eventually(t, func() bool {
		queued, running := h.eng.Queue()
		return running == 1 && len(queued) == 1 && queued[0].ExecutionID == second
	}, waitFor, 10*time.Millisecond, "the second execution waits in the queue")

	close(release)
	h.restart()
	for _, id := range []string{first, second} {
		assert.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status, id)
	}
}
