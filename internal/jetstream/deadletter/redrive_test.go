package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		dl   events.DeadLetter
		want string // "" when refused
	}{
		{"an inbox command", events.DeadLetter{Stream: streams.Inbox, Subject: "memmie.inbox.e1"}, streams.Inbox},
		{"a blob event", events.DeadLetter{Stream: streams.Blobs, Subject: "memmie.blobs.b1.updated"}, streams.Blobs},
		{"an inbox command stored under another subject", events.DeadLetter{Stream: streams.Inbox, Subject: "memmie.inbox.3.e1"}, ""},
		{"a cut one", events.DeadLetter{Stream: streams.Inbox, Subject: "memmie.inbox.e1", Truncated: true}, ""},
		{"an execution event", events.DeadLetter{Stream: streams.Executions, Subject: "memmie.executions.e1.completed"}, ""},
		{"a delta", events.DeadLetter{Stream: streams.Deltas, Subject: "memmie.deltas.b1"}, ""},
		{"a definition", events.DeadLetter{Stream: streams.Definitions, Subject: "memmie.definitions.workflows.w"}, ""},
		{"a dead letter", events.DeadLetter{Stream: streams.DeadLetter, Subject: "memmie.deadletter.runner"}, ""},
		{"no stream", events.DeadLetter{Subject: "memmie.inbox.e1"}, ""},
		{"another stream", events.DeadLetter{Stream: "OTHER", Subject: "memmie.inbox.e1"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := deadletter.Target(&tc.dl)
			if tc.want == "" {
				require.ErrorIs(t, err, deadletter.ErrNotRedrivable)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestRedrive(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	require.NoError(t, stream.EnsureStreams(ctx, js, append(streams.Configs(opts), streams.InboxConfig(opts))))
	now := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	w := deadletter.NewWriter(js, deadletter.Config{Now: func() time.Time { return now }})

	dl := &events.DeadLetter{Source: "orchestrator", Stream: streams.Inbox, Sequence: 4, Subject: "memmie.inbox.e1",
		Headers: map[string][]string{"Nats-Msg-Id": {"original"}, "Nats-Expected-Stream": {streams.Inbox},
			"Nats-Scheduler": {"memmie.timers.e1.t1"}, "X-Trace": {"t-1", "t-2"}},
		Data: []byte("{not json"), Reason: "decode: bad"}
	got, err := w.Redrive(ctx, "dl-1", dl)
	require.NoError(t, err)
	assert.Equal(t, deadletter.Redriven{DeadLetterID: "dl-1", Subject: "memmie.inbox.e1", Stream: streams.Inbox,
		Sequence: got.Sequence, MsgID: deadletter.RedriveMsgID("dl-1"), At: now}, got)
	require.NotZero(t, got.Sequence)

	s, err := js.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	msg, err := s.GetMsg(ctx, got.Sequence)
	require.NoError(t, err)
	partition, id, err := streams.ParseInboxPartitionSubject(msg.Subject)
	require.NoError(t, err, "stored in its partition, as any command sent to memmie.inbox.<id>")
	assert.GreaterOrEqual(t, partition, 0)
	assert.Equal(t, "e1", id)
	assert.Equal(t, dl.Data, msg.Data, "the original bytes")
	assert.Equal(t, []string{"t-1", "t-2"}, msg.Header.Values("X-Trace"))
	assert.Equal(t, deadletter.RedriveMsgID("dl-1"), msg.Header.Get(nats.MsgIdHdr))
	assert.Equal(t, "dl-1", msg.Header.Get(deadletter.HeaderRedriveOf))
	assert.Empty(t, msg.Header.Get("Nats-Scheduler"), "the headers that steer JetStream are not copied")

	// Twice within the duplicate window: published once, recorded once.
	again, err := w.Redrive(ctx, "dl-1", dl)
	require.NoError(t, err)
	assert.True(t, again.Duplicate)
	assert.Equal(t, got.Sequence, again.Sequence)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs)

	recorded, err := stream.Load(ctx, js, streams.DeadLetter, "memmie.deadletter.*.redriven")
	require.NoError(t, err)
	require.Len(t, recorded, 1)
	assert.Equal(t, "memmie.deadletter.orchestrator.redriven", recorded[0].Subject)
	ev, err := events.Decode(recorded[0].Data)
	require.NoError(t, err)
	assert.Equal(t, &events.DeadLetterRedriven{DeadLetterID: "dl-1", Source: "orchestrator", Subject: "memmie.inbox.e1",
		Stream: streams.Inbox, Sequence: got.Sequence, MsgID: deadletter.RedriveMsgID("dl-1")}, ev.Data)
	assert.True(t, now.Equal(ev.Time))
	dead, err := stream.Load(ctx, js, streams.DeadLetter, "memmie.deadletter.*")
	require.NoError(t, err)
	assert.Empty(t, dead, "a redrive's record is not a dead letter")

	exec := *dl
	exec.Stream, exec.Subject = streams.Executions, "memmie.executions.e1.completed"
	_, err = w.Redrive(ctx, "dl-2", &exec)
	require.ErrorIs(t, err, deadletter.ErrNotRedrivable)
	all, err := stream.Load(ctx, js, streams.DeadLetter, events.SubjectDeadLetter)
	require.NoError(t, err)
	assert.Len(t, all, 1, "a refused redrive records nothing")
}
