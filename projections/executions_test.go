package projections_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// row is what a test reads of an executions row.
type row struct {
	Status    string          `json:"status"`
	Workflow  string          `json:"workflow_id"`
	Revision  int             `json:"workflow_revision"`
	Priority  int             `json:"priority"`
	Run       int             `json:"run"`
	Input     json.RawMessage `json:"input"`
	Output    json.RawMessage `json:"output"`
	Error     json.RawMessage `json:"error"`
	Provider  *string         `json:"provider_id"`
	QueuedAt  *time.Time      `json:"queued_at"`
	StartedAt *time.Time      `json:"started_at"`
	EndedAt   *time.Time      `json:"ended_at"`
	UpdatedAt *time.Time      `json:"updated_at"`
}

func TestExecutionsRowsMatchTheEvents(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := histories(8)
	last := publish(t, js, interleave(hs))
	// A message that is not an event: dead-lettered, and the projection goes on past it.
	_, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "memmie.executions.x.garbage", Data: []byte("{not json"),
		Header: nats.Header{"Nats-Msg-Id": []string{"garbage-1"}}})
	require.NoError(t, err)
	last = publish(t, js, interleave(histories(12)[8:]))

	start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 7}))
	caughtUp(t, pool, "executions", last)

	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM executions`).Scan(&n))
	require.Equal(t, 12, n)

	get := func(i int) row {
		t.Helper()
		var s string
		id := execID(i)
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT row_to_json(e)::text FROM executions e WHERE execution_id = $1`, id).Scan(&s))
		var r row
		require.NoError(t, json.Unmarshal([]byte(s), &r))
		return r
	}
	at := func(i, k int) time.Time {
		return t0.Add(time.Duration(i)*time.Second + time.Duration(k)*time.Millisecond)
	}
	tm := func(p *time.Time) time.Time {
		if p == nil {
			return time.Time{}
		}
		return p.UTC()
	}

	completed := get(4)
	require.Equal(t, "completed", completed.Status)
	require.Equal(t, "wf-1", completed.Workflow)
	require.Equal(t, 1, completed.Revision)
	require.Equal(t, 4, completed.Priority)
	require.Equal(t, 1, completed.Run)
	require.JSONEq(t, `{"n": 4}`, string(completed.Input))
	require.JSONEq(t, `{"ok": true}`, string(completed.Output))
	require.Equal(t, "null", string(completed.Error))
	require.Equal(t, "prov", *completed.Provider)
	require.Equal(t, at(4, 0), tm(completed.QueuedAt))
	require.Equal(t, at(4, 1), tm(completed.StartedAt))
	require.Equal(t, at(4, 3), tm(completed.EndedAt))
	require.Equal(t, at(4, 3), tm(completed.UpdatedAt))

	failed := get(5)
	require.Equal(t, "failed", failed.Status)
	require.JSONEq(t, `{"code": "step_failed", "message": "boom"}`, string(failed.Error))
	require.Equal(t, "null", string(failed.Output))
	require.Equal(t, at(5, 2), tm(failed.EndedAt))

	rerun := get(10)
	require.Equal(t, "completed", rerun.Status)
	require.Equal(t, 2, rerun.Run)
	require.JSONEq(t, `"second"`, string(rerun.Output))
	require.Equal(t, at(10, 4), tm(rerun.StartedAt))
	require.Equal(t, at(10, 5), tm(rerun.EndedAt))

	cancelled := get(7)
	require.Equal(t, "cancelled", cancelled.Status)
	require.Nil(t, cancelled.StartedAt)
	require.Equal(t, at(7, 1), tm(cancelled.EndedAt))

	// The garbage went to the dead letters, with the reason.
	dl, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	msg, err := dl.GetLastMsgForSubject(context.Background(), "memmie.deadletter.projection-executions")
	require.NoError(t, err)
	ev, err := events.Decode(msg.Data)
	require.NoError(t, err)
	d := ev.Data.(*events.DeadLetter)
	require.Equal(t, "memmie.executions.x.garbage", d.Subject)
	require.Contains(t, d.Reason, "decode event")
}

// An event Postgres refuses for good (jsonb cannot hold \u0000) is dead-lettered with the
// reason; the rest of its batch is applied and the projection goes on.
func TestRefusedEventIsDeadLettered(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := histories(10)
	hs[3][0].Data.(*events.ExecutionQueued).Input = "a\x00b"
	last := publish(t, js, interleave(hs))

	start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 100}))
	caughtUp(t, pool, "executions", last)

	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM executions`).Scan(&n))
	require.Equal(t, 9, n)
	var found bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM executions WHERE execution_id = $1)`,
		execID(3)).Scan(&found))
	require.False(t, found)

	dl, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	msg, err := dl.GetLastMsgForSubject(context.Background(), "memmie.deadletter.projection-executions")
	require.NoError(t, err)
	ev, err := events.Decode(msg.Data)
	require.NoError(t, err)
	d := ev.Data.(*events.DeadLetter)
	require.Equal(t, hs[3][0].Subject, d.Subject)
	require.Contains(t, d.Reason, "22P05")
	require.Equal(t, uint64(1), dl.CachedInfo().State.Msgs, "only the refused event")
}
