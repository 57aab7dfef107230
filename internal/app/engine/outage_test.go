package engine_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// refuseWrites makes the executions stream take no new event (no stream answers on its
// subjects, as when it has no leader) until the returned function restores it. What it holds
// stays readable.
func refuseWrites(t *testing.T, js jetstream.JetStream) (restore func()) {
	t.Helper()
	ctx := testContext(t)
	s, err := js.Stream(ctx, streams.Executions)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	orig := info.Config
	gone := orig
	gone.Subjects = []string{"memmie.outage.>"}
	_, err = js.UpdateStream(ctx, gone)
	require.NoError(t, err)
	return func() {
		_, err := js.UpdateStream(testContext(t), orig)
		require.NoError(t, err)
	}
}

// TestExecutionsStreamOutage makes the executions stream refuse appends while executions run,
// for far longer than the old dead-letter threshold (20 deliveries of a retried input): the
// step reports and a cancel accepted meanwhile wait, retried, and once the stream takes
// appends again every execution completes, the cancelled one is cancelled, and nothing is
// dead-lettered.
func TestExecutionsStreamOutage(t *testing.T) {
	release := make(chan struct{})
	svc := newService(t, func(c call, _ int) (int, any) {
		if c.Path == "/first" {
			select {
			case <-release:
			case <-c.ctx.Done():
				return 0, nil
			}
		}
		return 200, map[string]any{"ok": true}
	})
	// A fast backoff, so that many retries fit in the outage.
	fast := func(c *engine.Config) {
		c.Orchestrator.RetryBackoff, c.Orchestrator.MaxRetryBackoff = 5*time.Millisecond, 20*time.Millisecond
		c.Timers.RetryBackoff, c.Timers.MaxRetryBackoff = 5*time.Millisecond, 20*time.Millisecond
	}
	h := newHarness(t, map[string]string{"svc": svc.URL}, fast)
	// The attempts' timeouts outlast the outage (100 retries took 53 s in one loaded CI run):
	// this test is about inputs waiting, not about an attempt's deadline passing meanwhile.
	h.register(`
id: two_calls
steps:
  - {id: first, type: api_call, service: svc, endpoint: /first, timeout_seconds: 600}
  - {id: second, type: api_call, service: svc, endpoint: /second, timeout_seconds: 600}
`)
	const n = 4
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.start("two_calls", map[string]any{"n": i})
	}
	svc.waitCalls(t, n)

	restore := refuseWrites(t, h.js)
	ctx := testContext(t)
	require.NoError(t, h.eng.Cancel(ctx, ids[0], "during the outage"), "the cancel is accepted")
	close(release) // the reports of the first calls arrive during the outage
	require.Eventually(t, func() bool {
		ci, err := h.js.Stream(ctx, streams.Inbox)
		if err != nil {
			return false
		}
		info, err := ci.Info(ctx)
		return err == nil && info.State.Msgs >= n+1
	}, waitFor, 10*time.Millisecond, "the reports and the cancel wait on the inbox")
	// The outage lasts until the inputs were retried 100 times: 5 inputs, so at least one of
	// them past 20 deliveries, the old dead-letter threshold.
	require.Eventually(t, func() bool { return h.eng.Stats().Loops["orchestrator"].Retried >= 100 },
		3*waitFor, 10*time.Millisecond, "the inputs are retried during the outage")
	for _, id := range ids {
		s, err := h.eng.Execution(ctx, id)
		require.NoError(t, err)
		require.Equal(t, execution.StatusRunning, s.Status, "nothing was recorded during the outage")
	}
	restore()

	assert.Equal(t, execution.StatusCancelled, h.waitEnd(ids[0]).Status, "the cancel accepted during the outage takes effect")
	assert.Equal(t, "during the outage", h.waitEnd(ids[0]).CancelReason)
	for _, id := range ids[1:] {
		assert.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status, id)
	}
	msgs, err := stream.Load(ctx, h.js, streams.DeadLetter, ">")
	require.NoError(t, err)
	assert.Zero(t, len(msgs), "nothing is dead-lettered")
	for name, st := range h.eng.Stats().Loops {
		assert.Zero(t, st.DeadLettered, name)
	}
}
