package dispatcher_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/tracing"
)

const waitFor = 20 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a server with the engine's streams.
func setup(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t)
	cfgs := append(streams.Configs(streams.Options{}), streams.InboxConfig(streams.Options{}), streams.LeasesConfig(streams.Options{}))
	require.NoError(t, stream.EnsureStreams(testContext(t), js, cfgs))
	return js
}

// appendEvents stores execution events, as the orchestrator and the API would.
func appendEvents(t testing.TB, js jetstream.JetStream, data ...events.ExecutionData) {
	t.Helper()
	for _, d := range data {
		ev := events.NewExecution(d, events.SourceCore, time.Now())
		b, err := events.Marshal(ev)
		require.NoError(t, err)
		subject, err := events.ExecutionSubject(ev.ExecutionID(), ev.Type)
		require.NoError(t, err)
		_, err = stream.Append(testContext(t), js, streams.Executions, []stream.Msg{{Subject: subject, Data: b, ID: ev.ID}}, stream.Expect{})
		require.NoError(t, err)
	}
}

// startDispatcher starts a dispatcher and stops it at the end of the test.
func startDispatcher(t testing.TB, js jetstream.JetStream, cfg dispatcher.Config) *dispatcher.Dispatcher {
	t.Helper()
	cfg.DeadLetter = deadletter.NewWriter(js, deadletter.Config{})
	d, err := dispatcher.New(js, cfg)
	require.NoError(t, err)
	require.NoError(t, d.Start(testContext(t)))
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	return d
}

// inboxStarts returns the start commands waiting in the inbox, by execution.
func inboxStarts(t testing.TB, js jetstream.JetStream) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range natstest.Messages(t, js, streams.Inbox) {
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		if st, ok := ev.Data.(*events.ExecutionStarted); ok {
			out[st.ExecutionID] = st.Run
		}
	}
	return out
}

// leader is a lease the test holds and drops at will.
type leader struct {
	mu      sync.Mutex
	until   time.Time
	changes chan struct{}
}

func newLeader() *leader { return &leader{changes: make(chan struct{}, 1)} }

func (l *leader) set(until time.Time) {
	l.mu.Lock()
	l.until = until
	l.mu.Unlock()
	select {
	case l.changes <- struct{}{}:
	default:
	}
}

func (l *leader) Held() bool { return time.Now().Before(l.ValidUntil()) }
func (l *leader) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}
func (l *leader) Changes() <-chan struct{} { return l.changes }

// TestLeaseLostMidPublishDoesNotAdmit: the lease lapses between the dispatcher's admission
// of an execution and its publish of the start. The start is not sent: the next leader, which
// may hold the lease by then, counts only what is in the inbox. The execution goes back to
// the queue.
func TestLeaseLostMidPublishDoesNotAdmit(t *testing.T) {
	js := setup(t)
	l := newLeader()
	l.set(time.Now().Add(time.Hour))
	hooked := make(chan string, 1)
	d := startDispatcher(t, js, dispatcher.Config{
		Leader: l,
		Hooks: func(_ context.Context, at faults.Point, id string) error {
			if at == faults.DispatcherAdmitted {
				l.set(time.Now().Add(-time.Millisecond)) // the lease lapses mid-publish
				select {
				case hooked <- id:
				default:
				}
			}
			return nil
		},
	})
	appendEvents(t, js, &events.ExecutionQueued{ExecutionID: "e1", WorkflowID: "wf", Priority: 1})
	select {
	case id := <-hooked:
		require.Equal(t, "e1", id)
	case <-time.After(waitFor):
		t.Fatal("the dispatcher did not admit e1")
	}
	require.Eventually(t, func() bool { return len(d.Queue()) == 1 }, waitFor, 10*time.Millisecond,
		"e1 is back in the queue")
	assert.Empty(t, inboxStarts(t, js), "no start sent after the lease lapsed")
	assert.Equal(t, 0, d.Running())
	assert.Eventually(t, func() bool { return !d.Leading() }, waitFor, 10*time.Millisecond)
}

// deadLetters counts the dead letters.
func deadLetters(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(testContext(t), streams.DeadLetter)
	require.NoError(t, err)
	info, err := s.Info(testContext(t))
	require.NoError(t, err)
	return info.State.Msgs
}

// queueIDs returns the queued executions in admission order, with their priorities.
func queueIDs(d *dispatcher.Dispatcher) []string {
	var out []string
	for _, e := range d.Queue() {
		out = append(out, fmt.Sprintf("%s/%d", e.ExecutionID, e.Priority))
	}
	return out
}

// TestRequeuedExecutionIsNeverDeadLettered: a requeued run of an execution the dispatcher
// does not know (a manual retry of one that ended before its view began) is queued with its
// priority and never dead-lettered: from the event when it carries the priority, with no
// lookup (here the queued event cannot be read at all); from the queued event otherwise,
// read again until it can be read.
func TestRequeuedExecutionIsNeverDeadLettered(t *testing.T) {
	js := setup(t)
	l := newLeader() // never held: nothing is admitted, the queue shows the order
	d := startDispatcher(t, js, dispatcher.Config{Leader: l})
	seven := 7
	appendEvents(t, js,
		&events.ExecutionQueued{ExecutionID: "low", WorkflowID: "wf", Priority: 0},
		&events.ExecutionRequeued{ExecutionID: "carried", Run: 2, Manual: true, Priority: &seven},
		&events.ExecutionRequeued{ExecutionID: "looked-up", Run: 2, Manual: true}, // as stored before the field
	)
	require.Eventually(t, func() bool { return len(d.Queue()) == 2 }, waitFor, 10*time.Millisecond)
	assert.Equal(t, []string{"carried/7", "low/0"}, queueIDs(d), "the carried priority needs no lookup")

	// The queued event of looked-up shows up late (a lagging replica): the read is retried.
	appendEvents(t, js, &events.ExecutionQueued{ExecutionID: "looked-up", WorkflowID: "wf", Priority: 9})
	require.Eventually(t, func() bool { return len(d.Queue()) == 3 }, waitFor, 10*time.Millisecond)
	assert.Equal(t, []string{"looked-up/9", "carried/7", "low/0"}, queueIDs(d))
	assert.Zero(t, deadLetters(t, js), "nothing dead-lettered")
}

// appendMany stores events quickly (async publishes), for a long history. It waits for the
// acks every window of publishes: with thousands outstanding, a loaded machine stalls the
// publisher ("too many outstanding async published messages").
func appendMany(t testing.TB, js jetstream.JetStream, data ...events.ExecutionData) {
	t.Helper()
	const window = 256
	for i, d := range data {
		if i > 0 && i%window == 0 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("async publishes did not complete")
			}
		}
		ev := events.NewExecution(d, events.SourceCore, time.Now())
		b, err := events.Marshal(ev)
		require.NoError(t, err)
		subject, err := events.ExecutionSubject(ev.ExecutionID(), ev.Type)
		require.NoError(t, err)
		msg := nats.NewMsg(subject)
		msg.Data = b
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		_, err = js.PublishMsgAsync(msg, jetstream.WithExpectStream(streams.Executions))
		require.NoError(t, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("async publishes did not complete")
	}
}

// TestStartUpReadsTheSnapshotAndTheTail: after 5,000 finished executions, a dispatcher that
// starts reads the last snapshot (written by the leader when it stopped) and the queue events
// after it, not the whole history; its view is the one a full replay gives.
func TestStartUpReadsTheSnapshotAndTheTail(t *testing.T) {
	js := setup(t)
	const finished = 5000
	var history []events.ExecutionData
	for i := range finished {
		id := fmt.Sprintf("done-%d", i)
		history = append(history,
			&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf"},
			&events.ExecutionStarted{ExecutionID: id, Run: 1},
			&events.ExecutionCompleted{ExecutionID: id, Run: 1})
	}
	history = append(history,
		&events.ExecutionQueued{ExecutionID: "r1", WorkflowID: "wf"},
		&events.ExecutionStarted{ExecutionID: "r1", Run: 1},
		&events.ExecutionQueued{ExecutionID: "q1", WorkflowID: "wf", Priority: 0},
		&events.ExecutionQueued{ExecutionID: "q2", WorkflowID: "wf", Priority: 5})
	appendMany(t, js, history...)

	l := newLeader()
	l.set(time.Now().Add(time.Hour))
	first := startDispatcher(t, js, dispatcher.Config{Leader: l, MaxRunning: 1}) // r1 runs: nothing is admitted
	full := first.StartUp()
	t.Logf("without a snapshot: %d events read in %s", full.Events, full.Took.Round(time.Millisecond))
	assert.Equal(t, 0, full.SnapshotParts)
	assert.Equal(t, len(history), full.Events)
	require.Eventually(t, first.Leading, waitFor, 10*time.Millisecond)
	require.NoError(t, first.Stop(testContext(t))) // the leader writes a snapshot as it stops

	appendEvents(t, js,
		&events.ExecutionQueued{ExecutionID: "q3", WorkflowID: "wf", Priority: 9},
		&events.ExecutionCompleted{ExecutionID: "r1", Run: 1})
	second := startDispatcher(t, js, dispatcher.Config{Leader: newLeader()})
	su := second.StartUp()
	t.Logf("from the snapshot: %d snapshot messages and %d events read in %s", su.SnapshotParts, su.Events, su.Took.Round(time.Millisecond))
	assert.Equal(t, 1, su.SnapshotParts)
	assert.Equal(t, 2, su.Events, "only the events after the snapshot")
	assert.Equal(t, []string{"q3/9", "q2/5", "q1/0"}, queueIDs(second))
	assert.Equal(t, 0, second.Running())
}

// TestSnapshotInParts: a view larger than one message of the leases stream is written in
// parts, and read back whole; a later, smaller snapshot replaces it.
func TestSnapshotInParts(t *testing.T) {
	js := setup(t)
	var queued []events.ExecutionData
	for i := range 300 {
		id := fmt.Sprintf("0190c5d2-0000-7000-8000-%012d", i)
		queued = append(queued, &events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", Priority: i % 3})
	}
	appendMany(t, js, queued...)
	restart := func() *dispatcher.Dispatcher {
		l := newLeader()
		l.set(time.Now().Add(time.Hour))
		d := startDispatcher(t, js, dispatcher.Config{Leader: l, MaxRunning: 1})
		require.Eventually(t, func() bool { return d.Running() == 1 && d.Leading() }, waitFor, 10*time.Millisecond)
		return d
	}
	first := restart() // admits one
	require.NoError(t, first.Stop(testContext(t)))
	second := restart()
	assert.Greater(t, second.StartUp().SnapshotParts, 1)
	assert.Zero(t, second.StartUp().Events)
	assert.Equal(t, 300, len(second.Queue())+second.Running(), "the one admitted is queued in the snapshot; the new leader admits it again")

	// All but one end: the next snapshot has one part, and the stale ones go.
	var ended []events.ExecutionData
	for i := 1; i < 300; i++ {
		ended = append(ended, &events.ExecutionCancelled{ExecutionID: fmt.Sprintf("0190c5d2-0000-7000-8000-%012d", i), Run: 1})
	}
	appendMany(t, js, ended...)
	require.Eventually(t, func() bool { return len(second.Queue())+second.Running() == 1 }, waitFor, 10*time.Millisecond)
	require.NoError(t, second.Stop(testContext(t)))
	third := startDispatcher(t, js, dispatcher.Config{Leader: newLeader()})
	assert.Equal(t, 1, third.StartUp().SnapshotParts)
	assert.Equal(t, []string{"0190c5d2-0000-7000-8000-000000000000/0"}, queueIDs(third))
}

// TestTakeOverReadsOnlyTheStartsItNeeds: a new leader counts the starts that the last one
// sent and that wait in the inbox, reading the commands of the executions queued in its view
// only, not every command in the inbox.
func TestTakeOverReadsOnlyTheStartsItNeeds(t *testing.T) {
	js := setup(t)
	const running = 200
	var history []events.ExecutionData
	for i := range running {
		id := fmt.Sprintf("r%d", i)
		history = append(history, &events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf"}, &events.ExecutionStarted{ExecutionID: id, Run: 1})
	}
	history = append(history,
		&events.ExecutionQueued{ExecutionID: "q1", WorkflowID: "wf"},
		&events.ExecutionQueued{ExecutionID: "q2", WorkflowID: "wf"},
		&events.ExecutionQueued{ExecutionID: "q3", WorkflowID: "wf"})
	appendMany(t, js, history...)
	// Commands wait in the inbox: for the running executions (not taken up yet), and the
	// starts of q1 and q2 that the last leader sent.
	for i := range running {
		require.NoError(t, inbox.Publish(testContext(t), js, events.NewExecution(&events.CancelRequested{ExecutionID: fmt.Sprintf("r%d", i), Reason: "test"}, events.SourceAPI, time.Now())))
	}
	for _, id := range []string{"q1", "q2"} {
		require.NoError(t, inbox.Publish(testContext(t), js, events.NewExecution(&events.ExecutionStarted{ExecutionID: id, Run: 1}, events.SourceDispatcher, time.Now())))
	}

	l := newLeader()
	l.set(time.Now().Add(time.Hour))
	d := startDispatcher(t, js, dispatcher.Config{Leader: l, MaxRunning: running + 2})
	require.Eventually(t, d.Leading, waitFor, 10*time.Millisecond)
	assert.Equal(t, running+2, d.Running(), "the last leader's starts count")
	assert.Equal(t, []string{"q3/0"}, queueIDs(d))
	assert.Equal(t, 2, d.InboxRead(), "only the commands of the queued executions are read")
}

// TestStartWithoutAckIsSentAgain: the starts of a round are sent together and their acks
// awaited; a start whose ack fails (here the inbox is gone) goes back to the queue and is
// sent again until it is stored: none is lost.
func TestStartWithoutAckIsSentAgain(t *testing.T) {
	js := setup(t)
	require.NoError(t, js.DeleteStream(testContext(t), streams.Inbox))
	d := startDispatcher(t, js, dispatcher.Config{MaxRunning: 10})
	appendEvents(t, js,
		&events.ExecutionQueued{ExecutionID: "e1", WorkflowID: "wf"},
		&events.ExecutionQueued{ExecutionID: "e2", WorkflowID: "wf", Priority: 5},
		&events.ExecutionQueued{ExecutionID: "e3", WorkflowID: "wf"})
	require.Eventually(t, func() bool { return len(d.Queue()) == 3 }, waitFor, time.Millisecond,
		"the starts not acknowledged are queued again")

	require.NoError(t, stream.EnsureStreams(testContext(t), js, []jetstream.StreamConfig{streams.InboxConfig(streams.Options{})}))
	require.Eventually(t, func() bool { return len(inboxStarts(t, js)) == 3 }, waitFor, 10*time.Millisecond,
		"every start is sent again, and stored")
	assert.Equal(t, map[string]int{"e1": 1, "e2": 1, "e3": 1}, inboxStarts(t, js))
	assert.Equal(t, 3, d.Running())
	assert.Empty(t, d.Queue())
}

// TestStartSpanJoinsTheQueuedTrace: with a tracer, the start of an execution whose queued
// event carries a traceparent is a dispatcher.start span in that trace, with the execution's
// attributes, and the start command carries the span's context; an execution queued without
// one has no span.
func TestStartSpanJoinsTheQueuedTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	js := setup(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	startDispatcher(t, js, dispatcher.Config{Tracer: tracing.New(tp)})

	ev := events.NewExecution(&events.ExecutionQueued{ExecutionID: "traced", WorkflowID: "wf"}, events.SourceCore, time.Now())
	b, err := events.Marshal(ev)
	require.NoError(t, err)
	_, err = stream.Append(testContext(t), js, streams.Executions, []stream.Msg{{Subject: "memmie.executions.traced.queued", Data: b, ID: ev.ID,
		Header: nats.Header{tracing.HeaderTraceparent: {"00-" + traceID + "-00f067aa0ba902b7-01"}}}}, stream.Expect{})
	require.NoError(t, err)
	appendEvents(t, js, &events.ExecutionQueued{ExecutionID: "untraced", WorkflowID: "wf"})
	require.Eventually(t, func() bool { return len(inboxStarts(t, js)) == 2 }, waitFor, 10*time.Millisecond)

	got := spans.GetSpans()
	require.Len(t, got, 1, "one span: the traced execution's start")
	span := got[0]
	assert.Equal(t, "dispatcher.start", span.Name)
	assert.Equal(t, traceID, span.SpanContext.TraceID().String())
	assert.Equal(t, "00f067aa0ba902b7", span.Parent.SpanID().String())
	assert.Contains(t, span.Attributes, tracing.ExecutionID.String("traced"))
	assert.Contains(t, span.Attributes, tracing.WorkflowID.String("wf"))

	m, err := stream.LastBySubject(testContext(t), js, streams.Inbox, "memmie.inbox.*.traced")
	require.NoError(t, err)
	assert.Equal(t, "00-"+traceID+"-"+span.SpanContext.SpanID().String()+"-01", m.Header.Get(tracing.HeaderTraceparent),
		"the start command carries the span's context")
}
