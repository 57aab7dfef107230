package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// The partition Record and Seed compute for an execution is the one the server stores its
// commands under.
func TestPartitionOfIsTheServers(t *testing.T) {
	for _, n := range []int{streams.DefaultPartitions, 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ctx := context.Background()
			_, _, js := natstest.Run(t)
			opts := streams.Options{Storage: jetstream.MemoryStorage, Partitions: n}
			require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(opts)}))
			o, err := New(js, Config{Partitions: n, DeadLetter: deadletter.NewWriter(js, deadletter.Config{})})
			require.NoError(t, err)
			want := map[string]bool{}
			for i := range 200 {
				id := uuid.NewString()
				if i%10 == 0 {
					id = fmt.Sprintf("trigger-%d", i) // not every id is a UUID
				}
				ev := events.NewExecution(&events.CancelRequested{ExecutionID: id, Run: 1}, events.SourceAPI, time.Now())
				require.NoError(t, inbox.Publish(ctx, js, ev))
				want[fmt.Sprintf("memmie.inbox.%d.%s", o.partitionOf(id), id)] = true
			}
			s, err := js.Stream(ctx, streams.Inbox)
			require.NoError(t, err)
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectInboxPartitions))
			require.NoError(t, err)
			got := map[string]bool{}
			for subject := range info.State.Subjects {
				got[subject] = true
			}
			assert.Equal(t, want, got)
		})
	}
}

// localSetup starts an orchestrator on every partition of a memory store; before, when set,
// is called on it before it starts.
func localSetup(t *testing.T, before func(*Orchestrator)) (jetstream.JetStream, *Orchestrator, []int) {
	t.Helper()
	ctx := context.Background()
	_, _, js := natstest.Run(t)
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	require.NoError(t, stream.EnsureStreams(ctx, js, append(streams.Configs(opts), streams.InboxConfig(opts))))
	o, err := New(js, Config{DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	require.NoError(t, err)
	if before != nil {
		before(o)
	}
	require.NoError(t, o.Start(ctx))
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	all := make([]int, streams.InboxPartitions(opts))
	for i := range all {
		all[i] = i
	}
	require.NoError(t, o.Assign(ctx, all))
	return js, o, all
}

const oneCall = "id: wf\nsteps:\n  - {id: a, type: api_call, service: svc, endpoint: /a}\n"

// queue appends an execution's queued event as Start does, expecting no event, and returns
// the message and its sequence.
func queue(t *testing.T, js jetstream.JetStream, id string) (stream.Msg, uint64) {
	t.Helper()
	q := queuedOf(t, id, oneCall, 1)
	b, err := events.Marshal(q)
	require.NoError(t, err)
	msg := stream.Msg{Subject: q.Subject, Data: b, ID: q.ID}
	ack, err := stream.Append(context.Background(), js, streams.Executions, []stream.Msg{msg},
		stream.Expect{FilterSubject: events.ExecutionFilter(id)})
	require.NoError(t, err)
	return msg, ack.LastSeq
}

// waitLast waits until the execution's last event has the tail.
func waitLast(t *testing.T, js jetstream.JetStream, id, tail string) {
	t.Helper()
	require.Eventually(t, func() bool {
		last, err := stream.LastBySubject(context.Background(), js, streams.Executions, events.ExecutionFilter(id))
		return err == nil && strings.HasSuffix(last.Subject, "."+tail)
	}, 30*time.Second, 10*time.Millisecond, "execution %s reaches %s", id, tail)
}

// reportOf is the encoded report of the execution's scheduled attempt, as the runner makes it.
func reportOf(t *testing.T, js jetstream.JetStream, id string) []byte {
	t.Helper()
	last, err := stream.LastBySubject(context.Background(), js, streams.Executions, events.ExecutionFilter(id))
	require.NoError(t, err)
	ev, err := events.Decode(last.Data)
	require.NoError(t, err)
	sched, ok := ev.Data.(*events.StepScheduled)
	require.True(t, ok, "last event %s", ev.Type)
	req := execution.Request{ExecutionID: id, AttemptRef: sched.AttemptRef, Request: sched.Request, Deadline: sched.Deadline}
	b, err := events.Marshal(req.Report(events.Response{StatusCode: 200, Body: map[string]any{"ok": true}}, time.Now()))
	require.NoError(t, err)
	return b
}

func start(t *testing.T, js jetstream.JetStream, id string) {
	t.Helper()
	ev := events.NewExecution(&events.ExecutionStarted{ExecutionID: id, Run: 1}, events.SourceDispatcher, time.Now())
	require.NoError(t, inbox.Publish(context.Background(), js, ev))
}

// A seeded execution's first input is decided without a read of the stream, and its report,
// handed over with Record, is recorded without the inbox.
func TestSeedAndRecord(t *testing.T) {
	js, o, _ := localSetup(t, nil)
	id := uuid.NewString()
	msg, seq := queue(t, js, id)
	o.Seed(id, msg, seq)
	start(t, js, id)
	waitLast(t, js, id, "step.scheduled")
	st := o.Stats()
	assert.EqualValues(t, 1, st.Seeded, "the start is decided on the seed")
	assert.Zero(t, st.HistoryLoads)

	require.NoError(t, o.Record(context.Background(), id, reportOf(t, js, id)))
	// Returned once appended: the execution has ended, with nothing waiting on the inbox.
	last, err := stream.LastBySubject(context.Background(), js, streams.Executions, events.ExecutionFilter(id))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(last.Subject, ".completed"), last.Subject)
	assert.EqualValues(t, 1, o.Stats().HandedOver)
	assert.EqualValues(t, 1, o.LoopStats().Handled, "only the start came through the inbox")
	assert.Zero(t, o.LoopStats().DeadLettered)
}

// A seed whose execution has moved on (a seed left behind past an eviction, or a wrong
// sequence) is never trusted past what the append checks: the input conflicts, or does not
// apply, and is decided again on the history read from the stream. Nothing is dead-lettered or
// dropped on the seed's word.
func TestStaleSeedIsReadAgain(t *testing.T) {
	js, o, _ := localSetup(t, nil)
	ctx := context.Background()

	t.Run("the history moved on", func(t *testing.T) {
		id := uuid.NewString()
		msg, seq := queue(t, js, id)
		start(t, js, id)
		waitLast(t, js, id, "step.scheduled")
		o.cache.remove(id) // evicted; the seed comes late
		o.Seed(id, msg, seq)
		conflicts := o.Stats().Conflicts
		require.NoError(t, o.Record(ctx, id, reportOf(t, js, id)))
		waitLast(t, js, id, "completed")
		assert.Greater(t, o.Stats().Conflicts, conflicts, "the report did not apply to the seed: read again")
	})
	t.Run("a wrong sequence", func(t *testing.T) {
		id := uuid.NewString()
		msg, seq := queue(t, js, id)
		o.Seed(id, msg, seq-1) // not the queued event's
		conflicts := o.Stats().Conflicts
		start(t, js, id)
		waitLast(t, js, id, "step.scheduled")
		assert.Greater(t, o.Stats().Conflicts, conflicts, "the append expecting the seed's sequence conflicted")
		require.NoError(t, o.Record(ctx, id, reportOf(t, js, id)))
		waitLast(t, js, id, "completed")
	})
	assert.Zero(t, o.LoopStats().DeadLettered)
}

// Record takes only the inputs of the partitions the orchestrator consumes, and none once it
// stops: the caller sends those to the inbox.
func TestRecordOnlyLocalPartitions(t *testing.T) {
	js, o, all := localSetup(t, nil)
	ctx := context.Background()
	id := uuid.NewString()
	p := o.partitionOf(id)
	var others []int
	for _, q := range all {
		if q != p {
			others = append(others, q)
		}
	}
	require.NoError(t, o.Assign(ctx, others))
	msg, seq := queue(t, js, id)
	o.Seed(id, msg, seq)
	data, err := events.Marshal(events.NewExecution(&events.CancelRequested{ExecutionID: id, Run: 1}, events.SourceAPI, time.Now()))
	require.NoError(t, err)
	assert.ErrorIs(t, o.Record(ctx, id, data), ErrNotLocal)

	require.NoError(t, o.Assign(ctx, all))
	require.NoError(t, o.Stop(ctx))
	assert.ErrorIs(t, o.Record(ctx, id, data), ErrNotLocal)
	assert.Zero(t, o.Stats().Seeded+o.Stats().HandedOver)
	assert.Empty(t, o.seeds.items, "no seed of a partition consumed elsewhere")
}

func TestWaitingInputsHoldBackRecord(t *testing.T) {
	w := waiting{items: map[string]map[uint64]struct{}{}}
	w.set("a", 7, true)
	w.set("a", 9, true)
	w.set("b", 3, true)
	if !w.has("a") || !w.has("b") || w.has("c") {
		t.Fatalf("waiting = %v", w.items)
	}
	w.set("a", 7, false) // settled on a later delivery
	if !w.has("a") {
		t.Fatal("a still has the input at 9 waiting")
	}
	w.set("a", 9, false)
	w.set("c", 1, false) // an input settled at once leaves nothing behind
	if w.has("a") || len(w.items) != 1 {
		t.Fatalf("waiting = %v, want only b", w.items)
	}
	w.removePartition(0, func(string) int { return 0 })
	if len(w.items) != 0 {
		t.Fatalf("waiting = %v after its partition was given up", w.items)
	}
}
