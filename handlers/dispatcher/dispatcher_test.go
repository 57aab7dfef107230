package dispatcher_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
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
	msgs, err := stream.Load(testContext(t), js, streams.Inbox, streams.SubjectInboxPartitions)
	require.NoError(t, err)
	out := map[string]int{}
	for _, m := range msgs {
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
