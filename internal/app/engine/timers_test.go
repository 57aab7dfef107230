package engine_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/timers"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
)

// schedules records the message schedules stored on memmie.timers.>, seen on the wire: the
// timer kind of each, per execution.
type schedules struct {
	nc    *nats.Conn
	mu    sync.Mutex
	kinds map[string][]events.TimerKind
}

func watchSchedules(t *testing.T, h *harness) *schedules {
	t.Helper()
	nc, err := nats.Connect(h.srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	w := &schedules{nc: nc, kinds: map[string][]events.TimerKind{}}
	_, err = nc.Subscribe("memmie.timers.>", func(m *nats.Msg) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("schedule on %s: %v", m.Subject, err)
			return
		}
		d := ev.Data.(*events.TimerFired)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.kinds[d.ExecutionID] = append(w.kinds[d.ExecutionID], d.Kind)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return w
}

func (w *schedules) of(id string) []events.TimerKind {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.kinds[id])
	slices.Sort(out)
	return out
}

// An attempt's deadline is enforced by the runner that holds it: a 3-step execution stores
// no schedule for its attempts' timeouts (30 s, well past ScheduleAfter), nor for its run's
// deadline, since the run ended within ScheduleAfter of its start, while a step's retry
// backoff past ScheduleAfter is still a durable schedule, as is the deadline of its run,
// still running then. (Before, each attempt stored a step_timeout schedule, and each run
// its deadline's.)
func TestAttemptsSetNoTimers(t *testing.T) {
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/one":   reply(200, map[string]any{"ok": true}),
		"/two":   reply(200, map[string]any{"ok": true}),
		"/three": reply(200, map[string]any{"ok": true}),
		"/flaky": func(_ call, n int) (int, any) {
			if n == 0 {
				return 503, map[string]any{"error": "busy"}
			}
			return 200, map[string]any{"ok": true}
		},
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL}, func(c *engine.Config) { c.Timers.ScheduleAfter = 2 * time.Second })
	w := watchSchedules(t, h)
	h.register(`
id: three_steps
steps:
  - {id: one, type: api_call, service: svc, endpoint: /one, timeout_seconds: 30}
  - {id: two, type: api_call, service: svc, endpoint: /two, timeout_seconds: 30}
  - {id: three, type: api_call, service: svc, endpoint: /three, timeout_seconds: 30}
`, `
id: retry_later
steps:
  - {id: flaky, type: api_call, service: svc, endpoint: /flaky, timeout_seconds: 30, retry: {max_attempts: 2, backoff_ms: 3000, jitter: 0}}
`)
	three := h.start("three_steps", nil)
	retried := h.start("retry_later", nil)
	for _, id := range []string{three, retried} {
		require.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status, id)
	}
	// Once the timers handler has settled every event it reads, the watch has seen every
	// schedule it stored.
	require.Eventually(t, func() bool {
		c, err := h.js.Consumer(testContext(t), streams.Executions, timers.Name)
		require.NoError(t, err)
		ci, err := c.Info(testContext(t))
		require.NoError(t, err)
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, waitFor, 10*time.Millisecond, "the timers handler caught up")
	require.NoError(t, w.nc.Flush())
	assert.Empty(t, w.of(three), "no schedule per attempt, nor for the deadline of a run that ended in time")
	assert.Equal(t, []events.TimerKind{events.TimerExecutionDeadline, events.TimerStepRetry}, w.of(retried),
		"the retry backoff is a durable schedule")
	assert.Equal(t, 1, timersFired(h.types(retried)), "the backoff's schedule fired the retry")
	assert.Zero(t, timersFired(h.types(three)))
}

func timersFired(history []events.Type) int {
	n := 0
	for _, ty := range history {
		if ty == events.TypeTimerFired {
			n++
		}
	}
	return n
}
