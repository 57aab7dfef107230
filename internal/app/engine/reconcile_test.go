package engine_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/handlers/reconciler"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
)

// reissued counts the commands the reconciler publishes to the inbox, seen on the wire.
type reissued struct {
	mu    sync.Mutex
	fired []events.TimerFired
}

func watchReissued(t *testing.T, h *harness) *reissued {
	t.Helper()
	nc, err := nats.Connect(h.srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	w := &reissued{}
	_, err = nc.Subscribe(events.InboxSubject("*"), func(m *nats.Msg) {
		if !strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), reconciler.MsgID("")) {
			return
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("re-issued command: %v", err)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.fired = append(w.fired, *ev.Data.(*events.TimerFired))
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return w
}

func (w *reissued) list() []events.TimerFired {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]events.TimerFired(nil), w.fired...)
}

// Every timer is lost (no timers handler runs), and so is the report of each execution's
// second attempt (the runner dies after the call, and its redelivery finds the deadline
// past). The reconciler fires the first retry, the second attempt's timeout and the second
// retry, and the executions complete.
func TestReconcilerReissuesLostTimers(t *testing.T) {
	svc := newService(t, func(c call, _ int) (int, any) {
		if c.Headers["X-Memmie-Attempt"] == "1" {
			return 503, map[string]any{"error": "busy"}
		}
		return 200, map[string]any{"ok": true}
	})
	// lastAttempt is the attempt of the service's last call for an execution; the runner's
	// hook runs after the call, before the report.
	lastAttempt := func(id string) string {
		calls := svc.Calls()
		for i := len(calls) - 1; i >= 0; i-- {
			if calls[i].Headers["X-Memmie-Execution-Id"] == id {
				return calls[i].Headers["X-Memmie-Attempt"]
			}
		}
		return ""
	}
	h := newHarness(t, map[string]string{"svc": svc.URL}, func(c *engine.Config) {
		c.Handlers.NoTimers = true
		c.Reconciler = reconciler.Config{Interval: 100 * time.Millisecond, Grace: 500 * time.Millisecond}
		c.Hooks = func(_ context.Context, at faults.Point, id string) error {
			if at == faults.RunnerCalled && lastAttempt(id) == "2" {
				return faults.ErrCrash // the report of attempt 2 is lost
			}
			return nil
		}
	})
	w := watchReissued(t, h)
	h.register(`
id: lossy
steps:
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    timeout_seconds: 1
    retry: {max_attempts: 3, backoff_ms: 200, jitter: 0}
`)
	ids := []string{h.start("lossy", nil), h.start("lossy", nil), h.start("lossy", nil)}
	for _, id := range ids {
		s := h.waitEnd(id)
		require.Equal(t, execution.StatusCompleted, s.Status, id)
		assert.Equal(t, 3, s.Steps[0].Attempt)
		assert.Equal(t, []events.Type{
			events.TypeExecutionQueued, events.TypeExecutionStarted,
			events.TypeStepScheduled, events.TypeStepReported, events.TypeStepRetryScheduled,
			events.TypeTimerFired, // the lost retry, re-issued
			events.TypeStepScheduled,
			events.TypeTimerFired, // the lost report: the attempt's lost timeout, re-issued
			events.TypeStepRetryScheduled,
			events.TypeTimerFired, // the lost retry, re-issued
			events.TypeStepScheduled, events.TypeStepReported, events.TypeStepSucceeded,
			events.TypeExecutionCompleted,
		}, h.types(id), id)
	}
	assert.Len(t, svc.Calls(), 9, "three attempts each")

	type timer struct {
		kind    events.TimerKind
		attempt int
	}
	perExecution := map[string][]timer{}
	for _, f := range w.list() {
		perExecution[f.ExecutionID] = append(perExecution[f.ExecutionID], timer{f.Kind, f.Attempt})
	}
	for _, id := range ids {
		assert.Equal(t, []timer{{events.TimerStepRetry, 2}, {events.TimerStepTimeout, 2}, {events.TimerStepRetry, 3}},
			perExecution[id], "each lost timer re-issued once, in order")
	}
	st := h.eng.Stats().Reconciler
	require.NotNil(t, st)
	assert.Equal(t, uint64(9), st.Reissued)
}

// Executions that wait for a while — a long backoff, a slow call, a place in the queue —
// but lose nothing get no command from the reconciler, however often it looks.
func TestReconcilerLeavesHealthyExecutionsAlone(t *testing.T) {
	release := make(chan struct{})
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/backoff": func(_ call, n int) (int, any) {
			if n == 0 {
				return 503, map[string]any{"error": "busy"}
			}
			return 200, map[string]any{"ok": true}
		},
		"/slow": func(c call, _ int) (int, any) {
			select {
			case <-release:
			case <-c.ctx.Done():
			}
			return 200, map[string]any{"ok": true}
		},
		"/fast": reply(200, map[string]any{"ok": true}),
	}))
	const grace = 3 * time.Second
	h := newHarness(t, map[string]string{"svc": svc.URL}, withMaxRunning(2), func(c *engine.Config) {
		c.Reconciler = reconciler.Config{Interval: 50 * time.Millisecond, Grace: grace}
	})
	w := watchReissued(t, h)
	h.register(`
id: backoff
steps:
  - {id: s, type: api_call, service: svc, endpoint: /backoff, retry: {max_attempts: 2, backoff_ms: 6000, jitter: 0}}
`, `
id: slow
steps:
  - {id: s, type: api_call, service: svc, endpoint: /slow, timeout_seconds: 60}
`, `
id: fast
steps:
  - {id: s, type: api_call, service: svc, endpoint: /fast}
`)
	backoff := h.start("backoff", nil)
	h.waitStatus(backoff, execution.StatusRunning)
	slow := h.start("slow", nil)
	svc.waitCalls(t, 2) // the backoff's first attempt, and the slow call
	fast := h.start("fast", nil)

	// Past the grace, the reconciler reads the waiting histories and finds nothing overdue.
	deadline := time.Now().Add(waitFor)
	for {
		st := h.eng.Stats().Reconciler
		require.NotNil(t, st)
		if st.Loaded >= 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the reconciler read no waiting history: %+v", st)
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	for _, id := range []string{backoff, slow, fast} {
		require.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status)
	}
	st := h.eng.Stats().Reconciler
	passes := st.Passes
	deadline = time.Now().Add(waitFor)
	for h.eng.Stats().Reconciler.Passes < passes+5 {
		require.True(t, time.Now().Before(deadline), "no more passes")
		time.Sleep(20 * time.Millisecond)
	}
	st = h.eng.Stats().Reconciler
	assert.Zero(t, st.Reissued, "%+v", st)
	assert.Empty(t, w.list(), "no command from the reconciler")
	fired := 0
	for _, ty := range h.types(backoff) {
		if ty == events.TypeTimerFired {
			fired++
		}
	}
	assert.Equal(t, 1, fired, "the backoff's timer, fired once by the timers handler")
}
