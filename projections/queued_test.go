package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// The kinds of queueHistories, by i%6.
const (
	queueCompleted = iota
	queueRetried   // failed, retried automatically, completed on its second run
	queueWaiting   // failed, its automatic retry not yet due
	queueCancelled // cancelled while running
	queueStill     // still queued
	queueFailed    // failed for good
	queueKinds
)

// queueDue is when the retries of queueHistories are due.
var queueDue = t0.Add(time.Hour)

// queueHistories builds n executions' histories, of queueKinds kinds by i%queueKinds. Step
// events sit in between, for the projection to leave alone; every other completed one ends
// with the rejection of its output.
func queueHistories(n int) [][]events.Event {
	out := make([][]events.Event, n)
	for i := range n {
		out[i] = queueHistory(i)
	}
	return out
}

// queueHistory is the i-th history of queueHistories.
func queueHistory(i int) []events.Event {
	id := execID(i)
	at := t0.Add(time.Duration(i) * time.Second)
	ev := func(d events.ExecutionData, k int) events.Event {
		return events.NewExecution(d, "test", at.Add(time.Duration(k)*time.Millisecond))
	}
	q := &events.ExecutionQueued{
		ExecutionID: id, WorkflowID: fmt.Sprintf("wf-%d", i%3), WorkflowRevision: 1 + i%2,
		Workflow: []byte(`{}`), InputSchema: []byte(`null`), OutputSchema: []byte(`null`),
		Priority: i % 100, MaxRetries: 2,
	}
	if i%2 == 0 {
		q.ProviderID, q.BlobID, q.SourceEventID = "prov", "blob-"+id, "evt-"+id
	}
	h := []events.Event{ev(q, 0)}
	started := ev(&events.ExecutionStarted{ExecutionID: id, Run: 1}, 1)
	step := ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 1}, Output: 1}, 2)
	boom := events.ExecutionError{Code: "step_failed", Message: "boom"}
	retry := ev(&events.ExecutionRetryScheduled{ExecutionID: id, Run: 1, Error: boom, RetryCount: 1, DueAt: queueDue}, 3)
	switch i % queueKinds {
	case queueCompleted:
		h = append(h, started, step, ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: "ok"}, 3))
		if i%(2*queueKinds) == 0 { // every other one's output did not apply to its blob
			h = append(h, ev(&events.DeltasRejected{ExecutionID: id, Run: 1, BlobID: q.BlobID, BlobVersion: 1,
				Item: "delta_operations[0]", Reason: "test failed"}, 4))
		}
	case queueRetried:
		prio := 77
		h = append(h, started, step, retry,
			ev(&events.ExecutionRequeued{ExecutionID: id, Run: 2, RetryCount: 1, Priority: &prio}, 4),
			ev(&events.ExecutionStarted{ExecutionID: id, Run: 2}, 5),
			ev(&events.ExecutionCompleted{ExecutionID: id, Run: 2, Output: "second"}, 6))
	case queueWaiting:
		h = append(h, started, retry)
	case queueCancelled:
		h = append(h, started, ev(&events.ExecutionCancelled{ExecutionID: id, Run: 1, Reason: "no"}, 2))
	case queueFailed:
		h = append(h, started, ev(&events.ExecutionFailed{ExecutionID: id, Run: 1, Error: boom}, 2))
	}
	return h
}

// queueRow is what a test reads of a queued_executions row.
type queueRow struct {
	ID         uuid.UUID       `json:"id"`
	Execution  string          `json:"execution_id"`
	Workflow   string          `json:"workflow_id"`
	Revision   int             `json:"workflow_revision"`
	Priority   int             `json:"priority"`
	Status     string          `json:"status"`
	RetryCount int             `json:"retry_count"`
	MaxRetries int             `json:"max_retries"`
	Provider   *string         `json:"provider_id"`
	Trigger    *string         `json:"trigger"`
	Blob       *string         `json:"blob_id"`
	QueuedAt   time.Time       `json:"queued_at"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Metadata   json.RawMessage `json:"metadata"`
}

// dumpQueued returns every row of queued_executions as JSON, in id order.
func dumpQueued(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT row_to_json(q)::text FROM queued_executions q ORDER BY id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func TestQueuedRowsMatchTheEvents(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	const n = 4 * queueKinds
	last := publish(t, js, interleave(queueHistories(n)))

	start(t, newRunner(t, projections.NewQueued(nil), pool, js, projections.Config{BatchSize: 7}))
	caughtUp(t, pool, "queued_executions", last)

	rows := map[string]queueRow{}
	ids := map[uuid.UUID]bool{}
	for _, s := range dumpQueued(t, pool) {
		var r queueRow
		require.NoError(t, json.Unmarshal([]byte(s), &r))
		rows[r.Execution] = r
		ids[r.ID] = true
	}
	require.Len(t, rows, n, "one row per execution")
	require.Len(t, ids, n)

	at := func(i, k int) time.Time {
		return t0.Add(time.Duration(i)*time.Second + time.Duration(k)*time.Millisecond)
	}
	get := func(kind, k int) (int, queueRow) {
		i := kind + k*queueKinds
		r, ok := rows[execID(i)]
		require.True(t, ok, "no row for execution %d", i)
		return i, r
	}
	for k := range n / queueKinds {
		i, completed := get(queueCompleted, k)
		require.Equal(t, "completed", completed.Status)
		require.Equal(t, fmt.Sprintf("wf-%d", i%3), completed.Workflow)
		require.Equal(t, 1+i%2, completed.Revision)
		require.Equal(t, i%100, completed.Priority)
		require.Equal(t, 0, completed.RetryCount)
		require.Equal(t, 2, completed.MaxRetries)
		require.Equal(t, at(i, 0), completed.CreatedAt.UTC())
		require.Equal(t, at(i, 0), completed.QueuedAt.UTC())
		require.Equal(t, at(i, 3), completed.UpdatedAt.UTC())
		if i%2 == 0 {
			require.Equal(t, "prov", *completed.Provider)
			require.Equal(t, "evt-"+execID(i), *completed.Trigger)
			require.Equal(t, "blob-"+execID(i), *completed.Blob)
			require.JSONEq(t, fmt.Sprintf(`{"run": 1, "provider_id": "prov", "blob_id": "blob-%[1]s", "trigger": "evt-%[1]s"}`, execID(i)),
				string(completed.Metadata))
		}

		i, retried := get(queueRetried, k)
		require.Equal(t, "completed", retried.Status)
		require.Equal(t, 1, retried.RetryCount)
		require.Equal(t, 77, retried.Priority, "the requeued event's priority")
		require.Equal(t, at(i, 0), retried.CreatedAt.UTC())
		require.Equal(t, at(i, 4), retried.QueuedAt.UTC(), "the second run's queuing")
		require.Equal(t, at(i, 6), retried.UpdatedAt.UTC())
		require.Nil(t, retried.Provider, "no provider, no trigger")
		require.Nil(t, retried.Trigger)
		require.JSONEq(t, `{"run": 2}`, string(retried.Metadata))

		i, waiting := get(queueWaiting, k)
		require.Equal(t, "pending", waiting.Status)
		require.Equal(t, 1, waiting.RetryCount)
		require.Equal(t, at(i, 3), waiting.UpdatedAt.UTC())
		var meta struct {
			Run     int       `json:"run"`
			RetryAt time.Time `json:"retry_at"`
		}
		require.NoError(t, json.Unmarshal(waiting.Metadata, &meta))
		require.Equal(t, 1, meta.Run)
		require.Equal(t, queueDue, meta.RetryAt.UTC())

		i, cancelled := get(queueCancelled, k)
		require.Equal(t, "cancelled", cancelled.Status)
		require.Equal(t, at(i, 2), cancelled.UpdatedAt.UTC())

		i, still := get(queueStill, k)
		require.Equal(t, "pending", still.Status)
		require.Equal(t, at(i, 0), still.QueuedAt.UTC())
		require.Equal(t, at(i, 0), still.UpdatedAt.UTC())

		_, failed := get(queueFailed, k)
		require.Equal(t, "failed", failed.Status)
		require.Equal(t, 0, failed.RetryCount)
	}

	// What the queue's index serves: the pending ones.
	var pending int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM queued_executions WHERE status = 'pending'`).Scan(&pending))
	require.Equal(t, 2*n/queueKinds, pending)
}

// A replay from the first message changes no row, and a rebuild into another database gives
// the same rows, ids included.
func TestQueuedReplayChangesNothing(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	evs := interleave(queueHistories(5 * queueKinds))
	last := publish(t, js, evs)

	r := start(t, newRunner(t, projections.NewQueued(nil), pool, js, projections.Config{BatchSize: 16}))
	caughtUp(t, pool, "queued_executions", last)
	r.stop()
	before := dumpQueued(t, pool)
	require.Len(t, before, 5*queueKinds)

	// Every event applied again, latest first, one at a time: the guards read the run and the
	// retry's wait back from the rows.
	ctx := context.Background()
	for k := len(evs) - 1; k >= 0; k-- {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, projections.NewQueued(nil).Apply(ctx, tx, []projections.Event{{Event: evs[k], Seq: uint64(k + 1)}}))
		require.NoError(t, tx.Commit(ctx))
	}
	require.Equal(t, before, dumpQueued(t, pool), "an event applied twice changed a row")

	_, err := pool.Exec(context.Background(), `UPDATE projection_checkpoints SET last_seq = 0`)
	require.NoError(t, err)
	c := &counting{Projection: projections.NewQueued(nil)}
	start(t, newRunner(t, c, pool, js, projections.Config{BatchSize: 16}))
	caughtUp(t, pool, "queued_executions", last)
	require.Equal(t, int(last), c.count(), "the replay read every event again")
	require.Equal(t, before, dumpQueued(t, pool))

	ref := pgtest.New(t)
	start(t, newRunner(t, projections.NewQueued(nil), ref, js, projections.Config{BatchSize: 5}))
	caughtUp(t, ref, "queued_executions", last)
	require.Equal(t, before, dumpQueued(t, ref))
}
