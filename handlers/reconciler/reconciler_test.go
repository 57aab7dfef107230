package reconciler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/reconciler"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/lease"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func setup(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t)
	opts := streams.Options{}
	cfgs := append(streams.Configs(opts), streams.InboxConfig(opts), streams.LeasesConfig(opts))
	require.NoError(t, stream.EnsureStreams(testContext(t), js, cfgs))
	return js
}

// builder drives one execution's core the way the orchestrator does, and keeps its history.
type builder struct {
	t       testing.TB
	s       execution.State
	history []events.Event
}

const workflowYAML = `
id: w
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
    timeout_seconds: %d
    retry: {max_attempts: 3, backoff_ms: 100, jitter: 0}
`

const transformYAML = `
id: t
steps:
  - {id: hello, type: transform, input_map: {greeting: "hello"}}
`

func newBuilder(t testing.TB, id, src string, at time.Time) *builder {
	t.Helper()
	wf, err := definitions.ParseWorkflow("w.yaml", []byte(src))
	require.NoError(t, err)
	pinned, err := definitions.Canonical(wf)
	require.NoError(t, err)
	b := &builder{t: t}
	b.input(events.NewExecution(&events.ExecutionQueued{ExecutionID: id, WorkflowID: wf.ID, WorkflowRevision: 1,
		Workflow: pinned}, events.SourceAPI, at), at)
	return b
}

// input applies an input and the decisions taken on it.
func (b *builder) input(in events.Event, at time.Time) {
	b.t.Helper()
	require.NoError(b.t, b.s.Apply(in))
	b.history = append(b.history, in)
	decisions, err := execution.Decide(b.s, in, at)
	require.NoError(b.t, err)
	for _, ev := range decisions {
		require.NoError(b.t, b.s.Apply(ev))
		b.history = append(b.history, ev)
	}
}

func (b *builder) start(at time.Time) *builder {
	started, ok := execution.Start(&b.s, at)
	require.True(b.t, ok)
	b.input(started, at)
	return b
}

// report reports the attempt in flight with status.
func (b *builder) report(status int, at time.Time) *builder {
	p := b.s.Pending()
	require.Len(b.t, p.Requests, 1)
	b.input(p.Requests[0].Report(events.Response{StatusCode: status, Body: map[string]any{}}, at), at)
	return b
}

// appendTo stores the history on the executions stream.
func (b *builder) appendTo(ctx context.Context, js jetstream.JetStream) { b.appendWith(ctx, js, nil) }

// appendWith stores the history on the executions stream, with first's headers on its first
// event (a trace context, say).
func (b *builder) appendWith(ctx context.Context, js jetstream.JetStream, first nats.Header) {
	b.t.Helper()
	for i, ev := range b.history {
		data, err := events.Marshal(ev)
		require.NoError(b.t, err)
		msg := nats.NewMsg(ev.Subject)
		msg.Data = data
		if i == 0 {
			for k, v := range first {
				msg.Header[k] = v
			}
		}
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		_, err = js.PublishMsg(ctx, msg)
		require.NoError(b.t, err)
	}
}

// commands returns the commands held in the inbox (a work queue, which no second consumer
// may read: message by message).
func commands(t testing.TB, js jetstream.JetStream) []events.Event {
	t.Helper()
	ctx := testContext(t)
	s, err := js.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []events.Event
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		out = append(out, ev)
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func TestPassReissuesOverdueTimersOnly(t *testing.T) {
	ctx := testContext(t)
	js := setup(t)
	t0 := time.Now().Add(-time.Minute).UTC()

	// timedOut's attempt ran out a minute ago, and its report was lost.
	timedOut := newBuilder(t, "timed-out", fmt.Sprintf(workflowYAML, 1), t0).start(t0)
	// backingOff's first attempt failed; its retry was due a minute ago. Its timer did reach
	// the inbox once, and was lost from it: the inbox still remembers its id.
	backingOff := newBuilder(t, "backing-off", fmt.Sprintf(workflowYAML, 1), t0).start(t0).report(503, t0)
	// healthy's attempt has an hour left; queued waits for the dispatcher; done has ended.
	healthy := newBuilder(t, "healthy", fmt.Sprintf(workflowYAML, 3600), t0).start(t0)
	queued := newBuilder(t, "queued", fmt.Sprintf(workflowYAML, 1), t0)
	done := newBuilder(t, "done", transformYAML, t0).start(t0)
	require.Equal(t, execution.StatusCompleted, done.s.Status)
	for _, b := range []*builder{timedOut, backingOff, healthy, queued, done} {
		b.appendTo(ctx, js)
	}
	lostRetry := backingOff.s.Pending().Timers
	require.Len(t, lostRetry, 2, "the run's deadline and the step's retry")
	retry := lostRetry[1].Fire
	require.NoError(t, inbox.Publish(ctx, js, retry))
	inb, err := js.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	info, err := inb.Info(ctx)
	require.NoError(t, err)
	require.NoError(t, inb.DeleteMsg(ctx, info.State.LastSeq))
	require.Empty(t, commands(t, js))

	// The stream's timestamps are now; the reconciler's clock is two minutes on.
	r, err := reconciler.New(js, reconciler.Config{Grace: time.Second, Logger: testLogger(t),
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	require.NoError(t, err)
	ps, err := r.Pass(ctx)
	require.NoError(t, err)
	assert.Equal(t, reconciler.PassStats{Lifecycle: 6, Open: 4, Checked: 4, Loaded: 3, Reissued: 2}, ps)

	got := map[string]events.Event{}
	for _, c := range commands(t, js) {
		got[c.ExecutionID()] = c
	}
	require.Len(t, got, 2, "one command for each stuck execution, none for the others")
	lost, ok := timedOut.s.Pending().Requests[0].Timeout()
	require.True(t, ok)
	timeout := lost.Fire
	assert.Equal(t, timeout.ID, got["timed-out"].ID, "the attempt's timeout, with the timers handler's id")
	assert.Equal(t, &events.TimerFired{ExecutionID: "timed-out", Kind: events.TimerStepTimeout, Run: 1, StepID: "call",
		Attempt: 1, DueAt: t0.Add(time.Second)}, got["timed-out"].Data)
	assert.Equal(t, retry.ID, got["backing-off"].ID, "the retry, sent again past the duplicate window")
	assert.Equal(t, events.TimerStepRetry, got["backing-off"].Data.(*events.TimerFired).Kind)

	// The commands wait for the orchestrator: nothing is lost, nothing is read or sent again.
	ps, err = r.Pass(ctx)
	require.NoError(t, err)
	assert.Equal(t, reconciler.PassStats{Open: 4, Checked: 4}, ps)
	assert.Len(t, commands(t, js), 2)

	// Once the execution ends, it is no longer looked at.
	cancelled := events.NewExecution(&events.ExecutionCancelled{ExecutionID: "queued", Run: 1}, events.SourceCore, t0)
	(&builder{t: t, history: []events.Event{cancelled}}).appendTo(ctx, js)
	ps, err = r.Pass(ctx)
	require.NoError(t, err)
	assert.Equal(t, reconciler.PassStats{Lifecycle: 1, Open: 3, Checked: 3}, ps)
	assert.Equal(t, reconciler.Stats{Passes: 3, Checked: 11, Loaded: 3, Reissued: 2}, r.Stats())
}

// TestPassCost measures a pass over 2,000 ended executions and 20 stuck ones: only the
// stuck ones are read, and a second pass reads nothing new.
func TestPassCost(t *testing.T) {
	ctx := testContext(t)
	js := setup(t)
	t0 := time.Now().Add(-time.Minute).UTC()
	const ended, stuck = 2000, 20

	started := time.Now()
	var pending []jetstream.PubAckFuture
	publish := func(b *builder) {
		for _, ev := range b.history {
			data, err := events.Marshal(ev)
			require.NoError(t, err)
			msg := nats.NewMsg(ev.Subject)
			msg.Data = data
			msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
			f, err := js.PublishMsgAsync(msg)
			require.NoError(t, err)
			pending = append(pending, f)
		}
	}
	for i := range ended {
		publish(newBuilder(t, fmt.Sprintf("ended-%04d", i), transformYAML, t0).start(t0))
	}
	for i := range stuck {
		publish(newBuilder(t, fmt.Sprintf("stuck-%02d", i), fmt.Sprintf(workflowYAML, 1), t0).start(t0))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publish did not complete")
	}
	for _, f := range pending {
		select {
		case err := <-f.Err():
			require.NoError(t, err)
		case <-f.Ok():
		}
	}
	t.Logf("stored %d events of %d executions in %s", len(pending), ended+stuck, time.Since(started).Round(time.Millisecond))

	r, err := reconciler.New(js, reconciler.Config{Grace: time.Second, Logger: testLogger(t),
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	require.NoError(t, err)
	begin := time.Now()
	ps, err := r.Pass(ctx)
	require.NoError(t, err)
	first := time.Since(begin)
	assert.Equal(t, reconciler.PassStats{Lifecycle: 2*ended + stuck, Open: stuck, Checked: stuck, Loaded: stuck, Reissued: stuck}, ps)

	begin = time.Now()
	ps, err = r.Pass(ctx)
	require.NoError(t, err)
	second := time.Since(begin)
	assert.Equal(t, reconciler.PassStats{Open: stuck, Checked: stuck}, ps)
	t.Logf("first pass (every lifecycle event, %d histories folded): %s; next pass: %s", stuck,
		first.Round(time.Millisecond), second.Round(time.Millisecond))
}

// TestOnlyTheLeaderReconciles: a process without the lease sends nothing.
func TestOnlyTheLeaderReconciles(t *testing.T) {
	ctx := testContext(t)
	js := setup(t)
	t0 := time.Now().Add(-time.Minute).UTC()
	newBuilder(t, "timed-out", fmt.Sprintf(workflowYAML, 1), t0).start(t0).appendTo(ctx, js)

	other, err := lease.New(js, lease.Config{Role: reconciler.Name, Holder: "other", TTL: 10 * time.Second})
	require.NoError(t, err)
	require.NoError(t, other.Start(ctx))
	t.Cleanup(func() { _ = other.Stop(context.Background()) })
	require.True(t, other.Held())
	mine, err := lease.New(js, lease.Config{Role: reconciler.Name, Holder: "mine", TTL: 10 * time.Second})
	require.NoError(t, err)
	require.NoError(t, mine.Start(ctx))
	t.Cleanup(func() { _ = mine.Stop(context.Background()) })

	now := func() time.Time { return time.Now().Add(2 * time.Minute) }
	follower, err := reconciler.New(js, reconciler.Config{Grace: time.Second, Interval: 50 * time.Millisecond,
		Leader: mine, Now: now, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, follower.Start(ctx))
	t.Cleanup(func() { _ = follower.Stop(context.Background()) })

	// The leader's own passes show the follower's silence is not for lack of time.
	leader, err := reconciler.New(js, reconciler.Config{Grace: time.Second, Interval: 50 * time.Millisecond,
		Leader: other, Now: now, Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, leader.Start(ctx))
	t.Cleanup(func() { _ = leader.Stop(context.Background()) })
	require.Eventually(t, func() bool { return leader.Stats().Passes >= 5 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, leader.Stop(ctx))
	require.NoError(t, follower.Stop(ctx))

	assert.Zero(t, follower.Stats(), "the process without the lease did nothing")
	assert.Equal(t, uint64(1), leader.Stats().Reissued)
	assert.Len(t, commands(t, js), 1)
}
