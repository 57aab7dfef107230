package projections_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// deadLetterRow is what a test reads of a dead_letters row.
type deadLetterRow struct {
	ID         string              `json:"id"`
	Source     string              `json:"source"`
	Reason     string              `json:"reason"`
	Subject    string              `json:"subject"`
	Headers    map[string][]string `json:"headers"`
	Truncated  bool                `json:"truncated"`
	Stream     *string             `json:"stream"`
	StreamSeq  *uint64             `json:"stream_seq"`
	RecordedAt time.Time           `json:"recorded_at"`
	RedrivenAt *time.Time          `json:"redriven_at"`
	Data       []byte              `json:"-"`
}

// dumpDeadLetters returns every row of dead_letters, in id order, as JSON with its data in hex.
func dumpDeadLetters(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT row_to_json(d)::text FROM dead_letters d ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func deadLetterRows(t *testing.T, pool *pgxpool.Pool) map[string]deadLetterRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT row_to_json(d)::text, data FROM dead_letters d`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]deadLetterRow{}
	for rows.Next() {
		var (
			s string
			r deadLetterRow
		)
		require.NoError(t, rows.Scan(&s, &r.Data))
		require.NoError(t, json.Unmarshal([]byte(s), &r))
		out[r.ID] = r
	}
	require.NoError(t, rows.Err())
	return out
}

// deadLetterCaughtUp waits until the dead_letters checkpoint reaches the stream's last sequence.
func deadLetterCaughtUp(t *testing.T, js jetstream.JetStream, pool *pgxpool.Pool) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	last := info.State.LastSeq
	var got int64
	require.Eventually(t, func() bool {
		err := pool.QueryRow(context.Background(), `SELECT last_seq FROM projection_checkpoints WHERE projection = 'dead_letters' AND stream = $1`,
			streams.DeadLetter).Scan(&got)
		return err == nil && uint64(got) >= last
	}, waitFor, 10*time.Millisecond, "dead_letters never reached %d", last)
	require.Equal(t, last, uint64(got))
	return last
}

// TestDeadLettersRowsMatchTheEvents: dead letters recorded by the real writer, a redrive and a
// message that is no event make the rows they say; replaying them changes nothing.
func TestDeadLettersRowsMatchTheEvents(t *testing.T) {
	js := setup(t)
	ctx := context.Background()
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(streams.Options{})}))
	pool := pgtest.New(t)
	at := time.Date(2026, 3, 4, 5, 6, 7, 891011000, time.UTC)
	w := deadletter.NewWriter(js, deadletter.Config{Now: func() time.Time { return at }})

	inbox := deadletter.Message{Stream: streams.Inbox, Sequence: 3, Subject: "memmie.inbox.e1",
		Header: nats.Header{"Nats-Msg-Id": {"m-1"}, "X-Nul": {"a\x00b"}}, Data: []byte("{not json")}
	require.NoError(t, w.RecordMessage(ctx, "orchestrator", inbox, "decode event envelope: \x00 unexpected"))
	exec := deadletter.Message{Stream: streams.Executions, Sequence: 8, Subject: "memmie.executions.e1.step.scheduled", Data: []byte(`{}`)}
	require.NoError(t, w.RecordMessage(ctx, "runner", exec, "not a scheduled attempt"))
	big := deadletter.Message{Stream: streams.Inbox, Sequence: 4, Subject: "memmie.inbox.e2",
		Data: []byte(strings.Repeat("x", events.MaxDeadLetterData+1))}
	require.NoError(t, w.RecordMessage(ctx, "orchestrator", big, "too big"))
	// The same message recorded again: one row.
	require.NoError(t, w.RecordMessage(ctx, "orchestrator", inbox, "another reason"))

	idOf := func(source string, m deadletter.Message) string {
		ev, err := deadletter.New(source, m, "x", at)
		require.NoError(t, err)
		return ev.ID
	}
	inboxID, execID, bigID := idOf("orchestrator", inbox), idOf("runner", exec), idOf("orchestrator", big)
	dl := &events.DeadLetter{Source: "orchestrator", Stream: inbox.Stream, Sequence: inbox.Sequence, Subject: inbox.Subject,
		Headers: inbox.Header, Data: inbox.Data, Reason: "x"}
	_, err := w.Redrive(ctx, inboxID, dl)
	require.NoError(t, err)
	// Not an event: the runner dead-letters it, and that dead letter is a row too.
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: "memmie.deadletter.garbage", Data: []byte("{not json"),
		Header: nats.Header{"Nats-Msg-Id": {"garbage-1"}}})
	require.NoError(t, err)

	start(t, newRunner(t, projections.NewDeadLetters(nil), pool, js, projections.Config{BatchSize: 2}))
	last := deadLetterCaughtUp(t, js, pool)
	// The runner's dead letter of the garbage came after it: wait for that one too.
	require.Eventually(t, func() bool { return len(deadLetterRows(t, pool)) == 4 }, waitFor, 10*time.Millisecond)
	last = deadLetterCaughtUp(t, js, pool)

	rows := deadLetterRows(t, pool)
	micro := at.Truncate(time.Microsecond)
	got := rows[inboxID]
	assert.Equal(t, "orchestrator", got.Source)
	assert.Equal(t, "decode event envelope: \uFFFD unexpected", got.Reason, "the first record, its NUL replaced")
	assert.Equal(t, "memmie.inbox.e1", got.Subject)
	assert.Equal(t, map[string][]string{"Nats-Msg-Id": {"m-1"}, "X-Nul": {"a\uFFFDb"}}, got.Headers)
	assert.Equal(t, []byte("{not json"), got.Data)
	assert.False(t, got.Truncated)
	assert.Equal(t, streams.Inbox, *got.Stream)
	assert.Equal(t, uint64(3), *got.StreamSeq)
	assert.True(t, micro.Equal(got.RecordedAt), got.RecordedAt)
	require.NotNil(t, got.RedrivenAt)
	assert.True(t, micro.Equal(*got.RedrivenAt))

	got = rows[execID]
	assert.Equal(t, "runner", got.Source)
	assert.Equal(t, map[string][]string{}, got.Headers)
	assert.Nil(t, got.RedrivenAt)
	assert.Equal(t, uint64(8), *got.StreamSeq)

	got = rows[bigID]
	assert.True(t, got.Truncated)
	assert.Len(t, got.Data, events.MaxDeadLetterData)

	var garbage deadLetterRow
	for id, r := range rows {
		if id != inboxID && id != execID && id != bigID {
			garbage = r
		}
	}
	assert.Equal(t, "projection-dead_letters", garbage.Source)
	assert.Equal(t, "memmie.deadletter.garbage", garbage.Subject)
	assert.Equal(t, streams.DeadLetter, *garbage.Stream)
	assert.Equal(t, []byte("{not json"), garbage.Data)

	// Replay: every event applied again, latest first, then the stream from the start, then
	// into a database of its own: the same rows.
	before := dumpDeadLetters(t, pool)
	msgs, err := stream.Load(ctx, js, streams.DeadLetter, events.SubjectDeadLetter)
	require.NoError(t, err)
	var evs []projections.Event
	for _, m := range msgs {
		if ev, err := events.Decode(m.Data); err == nil {
			evs = append(evs, projections.Event{Event: ev, Seq: m.Sequence})
		}
	}
	for k := len(evs) - 1; k >= 0; k-- {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, projections.NewDeadLetters(nil).Apply(ctx, tx, evs[k:k+1]))
		require.NoError(t, tx.Commit(ctx))
	}
	require.Equal(t, before, dumpDeadLetters(t, pool), "an event applied twice changed a row")

	ref := pgtest.New(t)
	start(t, newRunner(t, projections.NewDeadLetters(nil), ref, js, projections.Config{BatchSize: 100}))
	require.Equal(t, last, deadLetterCaughtUp(t, js, ref), "a rebuild dead-letters nothing new")
	require.Equal(t, before, dumpDeadLetters(t, ref))
}
