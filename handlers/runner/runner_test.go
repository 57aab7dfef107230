package runner_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/services"
)

// keyedService counts the calls per Idempotency-Key and answers after delay.
type keyedService struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string]int
}

func newKeyedService(t *testing.T, delay time.Duration) *keyedService {
	s := &keyedService{calls: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.Header.Get("Idempotency-Key")]++
		s.mu.Unlock()
		select {
		case <-time.After(delay): // the service's work
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *keyedService) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, n := range s.calls {
		out[k] = n
	}
	return out
}

type fixture struct {
	t  *testing.T
	js jetstream.JetStream
}

// setup creates the streams the runner uses; inbox, when set, varies the inbox.
func setup(t *testing.T, inbox func(*jetstream.StreamConfig)) *fixture {
	t.Helper()
	_, _, js := natstest.Run(t)
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	in := streams.InboxConfig(opts)
	if inbox != nil {
		inbox(&in)
	}
	require.NoError(t, stream.EnsureStreams(context.Background(), js, append(streams.Configs(opts), in)))
	return &fixture{t: t, js: js}
}

func (f *fixture) start(svcURL string, cfg runner.Config, opts ...func(*runner.Config)) *runner.Runner {
	t := f.t
	t.Helper()
	u, err := url.Parse(svcURL)
	require.NoError(t, err)
	reg, err := services.NewRegistry(services.Service{Name: "svc", BaseURL: u})
	require.NoError(t, err)
	caller, err := services.NewCaller(services.Config{Registry: reg})
	require.NoError(t, err)
	t.Cleanup(caller.Close)
	cfg.Caller = caller
	cfg.DeadLetter = deadletter.NewWriter(f.js, deadletter.Config{})
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, o := range opts {
		o(&cfg)
	}
	r, err := runner.New(f.js, cfg)
	require.NoError(t, err)
	require.NoError(t, r.Start(context.Background()))
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return r
}

// schedule appends a scheduled attempt of step "call" of execution id, as the orchestrator
// does.
func (f *fixture) schedule(id string, deadline time.Time) {
	f.t.Helper()
	ev := events.NewExecution(&events.StepScheduled{
		ExecutionID: id,
		AttemptRef:  events.AttemptRef{Run: 1, StepID: "call", Attempt: 1},
		Request:     events.Request{Service: "svc", Method: "POST", Path: "/call", TimeoutMS: 30_000, IdempotencyKey: id + "/call"},
		Deadline:    deadline,
	}, events.SourceCore, time.Now())
	data, err := events.Marshal(ev)
	require.NoError(f.t, err)
	msg := nats.NewMsg(ev.Subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	_, err = f.js.PublishMsg(context.Background(), msg)
	require.NoError(f.t, err)
}

// reports returns the number of reports on the inbox.
func (f *fixture) reports() int {
	s, err := f.js.Stream(context.Background(), streams.Inbox)
	require.NoError(f.t, err)
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("memmie.inbox.>"))
	require.NoError(f.t, err)
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

func (f *fixture) deadLetters() int {
	msgs, err := stream.Load(context.Background(), f.js, streams.DeadLetter, events.SubjectDeadLetter)
	require.NoError(f.t, err)
	return len(msgs)
}

func executionID(i int) string {
	return events.ID("runner-test", string(rune('a'+i)))
}

// A slow service is called once per attempt: with 4 workers, an AckWait of 1 s and calls of
// 3 s, the runner pulls an attempt only for a free worker, and the calls in progress are
// kept alive. (Before, it prefetched twice its workers; the waiting ones were delivered again
// and called twice.)
func TestSlowServiceIsCalledOncePerAttempt(t *testing.T) {
	svc := newKeyedService(t, 3*time.Second)
	f := setup(t, nil)
	const n = 8
	for i := range n {
		f.schedule(executionID(i), time.Now().Add(time.Minute))
	}
	f.start(svc.URL, runner.Config{Workers: 4, AckWait: time.Second})
	require.Eventually(t, func() bool { return f.reports() == n }, 60*time.Second, 50*time.Millisecond, "every attempt is reported")
	calls := svc.counts()
	require.Len(t, calls, n)
	for i := range n {
		assert.Equal(t, 1, calls[executionID(i)+"/call"], "attempt %d is called once", i)
	}
	assert.Zero(t, f.deadLetters())
}

// A report that cannot be published (the inbox refuses writes) is published again in place,
// once the inbox takes writes again: the call is not made again, and no delivery is used up.
func TestReportIsRetriedInPlace(t *testing.T) {
	svc := newKeyedService(t, 0)
	// The inbox is full: one message, at most one, new ones refused. (A stream that allows
	// message schedules cannot refuse new messages; the runner needs none.)
	f := setup(t, func(c *jetstream.StreamConfig) {
		c.MaxMsgs, c.Discard, c.AllowMsgSchedules = 1, jetstream.DiscardNew, false
	})
	_, err := f.js.Publish(context.Background(), "memmie.timers.filler.x", []byte("filler"))
	require.NoError(t, err)
	id := executionID(0)
	f.schedule(id, time.Now().Add(time.Minute))
	r := f.start(svc.URL, runner.Config{AckWait: time.Second, MaxDeliver: 2})
	require.Eventually(t, func() bool { return svc.counts()[id+"/call"] == 1 }, 20*time.Second, 10*time.Millisecond)

	<-time.After(3 * time.Second) // the outage: longer than two deliveries' backoff
	ctx := context.Background()
	s, err := f.js.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = -1, jetstream.DiscardOld
	_, err = f.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return f.reports() == 1 }, 20*time.Second, 10*time.Millisecond, "the report is published")
	assert.Equal(t, map[string]int{id + "/call": 1}, svc.counts(), "the call is made once")
	assert.Zero(t, f.deadLetters())
	assert.Zero(t, r.Stats().Retried, "the attempt was not handed back")
	last, err := stream.LastBySubject(ctx, f.js, streams.Inbox, "memmie.inbox.>")
	require.NoError(t, err)
	ev, err := events.Decode(last.Data)
	require.NoError(t, err)
	rep := ev.Data.(*events.StepReported)
	assert.Equal(t, 200, rep.StatusCode, "the call's own report, not a runner that gave up")
}

// lastReport returns the last report on the inbox.
func (f *fixture) lastReport() *events.StepReported {
	f.t.Helper()
	last, err := stream.LastBySubject(context.Background(), f.js, streams.Inbox, "memmie.inbox.>")
	require.NoError(f.t, err)
	ev, err := events.Decode(last.Data)
	require.NoError(f.t, err)
	return ev.Data.(*events.StepReported)
}

// An attempt taken up after its deadline (a backlog) is not called: the runner reports it as
// timed out, in the words a timeout timer records, since no timer does any more. (Before, it
// was skipped without a report, and the timer timed it out.)
func TestAttemptPastDeadlineIsReportedNotCalled(t *testing.T) {
	svc := newKeyedService(t, 0)
	f := setup(t, nil)
	id := executionID(0)
	f.schedule(id, time.Now().Add(-time.Minute))
	f.start(svc.URL, runner.Config{})
	require.Eventually(t, func() bool { return f.reports() == 1 }, 20*time.Second, 10*time.Millisecond, "the attempt is reported")
	rep := f.lastReport()
	assert.Equal(t, events.ErrorTimeout, rep.ErrorKind)
	assert.Equal(t, execution.DeadlinePassed, rep.Error)
	assert.Equal(t, events.AttemptRef{Run: 1, StepID: "call", Attempt: 1}, rep.AttemptRef)
	assert.Zero(t, svc.counts()[id+"/call"], "no call")
	assert.Zero(t, f.deadLetters())
}

// deadlines records the deadline of each call's context, and calls through.
type deadlines struct {
	runner.Caller
	mu  sync.Mutex
	got []time.Time
}

func (d *deadlines) Call(ctx context.Context, req services.Request) services.Result {
	dl, _ := ctx.Deadline()
	d.mu.Lock()
	d.got = append(d.got, dl)
	d.mu.Unlock()
	return d.Caller.Call(ctx, req)
}

// A call that outlives the attempt's deadline is cut at the deadline, however late the
// attempt was delivered: the call's context ends at the absolute deadline (plus the clock
// skew allowance), not at the step's timeout counted from the delivery (30 s here), and the
// report is a timeout.
func TestCallIsCutAtTheDeadline(t *testing.T) {
	svc := newKeyedService(t, time.Minute) // answers only when the call is cut
	f := setup(t, nil)
	id := executionID(0)
	deadline := time.Now().Add(2 * time.Second)
	f.schedule(id, deadline)
	var calls *deadlines
	f.start(svc.URL, runner.Config{}, func(c *runner.Config) {
		calls = &deadlines{Caller: c.Caller}
		c.Caller = calls
	})
	require.Eventually(t, func() bool { return f.reports() == 1 }, 20*time.Second, 10*time.Millisecond,
		"reported well before the step's 30 s timeout")
	rep := f.lastReport()
	assert.Equal(t, events.ErrorTimeout, rep.ErrorKind, rep.Error)
	assert.Equal(t, 1, svc.counts()[id+"/call"])
	calls.mu.Lock()
	defer calls.mu.Unlock()
	require.Len(t, calls.got, 1)
	want := deadline.Add(runner.DefaultClockSkew)
	assert.True(t, calls.got[0].Equal(want), "the call's context ends at the attempt's deadline (with the skew) %s, not %s", want, calls.got[0])
}

// A runner that dies after its call and before its report is replaced once AckWait has
// passed: the redelivery finds the deadline past and reports the timeout without calling
// again. (Before, it skipped the attempt and left it to the timeout timer.)
func TestRedeliveryPastDeadlineReportsTheTimeout(t *testing.T) {
	svc := newKeyedService(t, time.Minute)
	f := setup(t, nil)
	id := executionID(0)
	f.schedule(id, time.Now().Add(time.Second))
	var crashed atomic.Bool
	f.start(svc.URL, runner.Config{AckWait: time.Second, Hooks: func(_ context.Context, at faults.Point, _ string) error {
		if at == faults.RunnerCalled && crashed.CompareAndSwap(false, true) {
			return faults.ErrCrash // the report of the call is lost with the process
		}
		return nil
	}})
	require.Eventually(t, func() bool { return f.reports() == 1 }, 20*time.Second, 10*time.Millisecond, "the attempt is reported")
	require.True(t, crashed.Load())
	rep := f.lastReport()
	assert.Equal(t, events.ErrorTimeout, rep.ErrorKind)
	assert.Equal(t, execution.DeadlinePassed, rep.Error, "the redelivery's report, made without a call")
	assert.Equal(t, 1, svc.counts()[id+"/call"], "called once, before the crash")
	assert.Zero(t, f.deadLetters())
}

// The runner's clock may be ahead of the orchestrator's, which set the deadline: an attempt
// whose deadline is passed by less than the skew allowance is still called.
func TestDeadlineToleratesClockSkew(t *testing.T) {
	svc := newKeyedService(t, 0)
	f := setup(t, nil)
	id := executionID(0)
	f.schedule(id, time.Now().Add(500*time.Millisecond))
	f.start(svc.URL, runner.Config{Now: func() time.Time { return time.Now().Add(time.Second) }})
	require.Eventually(t, func() bool { return f.reports() == 1 }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, svc.counts()[id+"/call"], "called though its deadline is 0.5 s behind this clock")

	late := executionID(1)
	f.schedule(late, time.Now().Add(-runner.DefaultClockSkew-time.Second))
	require.Eventually(t, func() bool {
		c, err := f.js.Consumer(context.Background(), streams.Executions, runner.Name)
		require.NoError(t, err)
		ci, err := c.Info(context.Background())
		require.NoError(t, err)
		return ci.NumAckPending == 0 && ci.NumPending == 0
	}, 20*time.Second, 10*time.Millisecond)
	assert.Zero(t, svc.counts()[late+"/call"], "an attempt past its deadline by more than the skew is skipped")
	assert.Equal(t, 2, f.reports(), "and reported as timed out")
}
