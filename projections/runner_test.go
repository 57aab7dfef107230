package projections_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// A replay from the first message (the checkpoint reset) changes no row.
func TestReplayChangesNothing(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	last := publish(t, js, interleave(histories(40)))

	r := start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 16}))
	caughtUp(t, pool, "executions", last)
	r.stop()
	before := dump(t, pool)
	require.Equal(t, 40, len(before))

	_, err := pool.Exec(context.Background(), `UPDATE projection_checkpoints SET last_seq = 0`)
	require.NoError(t, err)
	c := &counting{Projection: projections.NewExecutions(nil)}
	start(t, newRunner(t, c, pool, js, projections.Config{BatchSize: 16}))
	caughtUp(t, pool, "executions", last)
	require.Equal(t, int(last), c.count(), "the replay read every event again")
	require.Equal(t, before, dump(t, pool))
}

// A runner killed between a batch's writes and its commit, then started again, loses nothing
// and doubles nothing: its rows equal those of a runner that was never killed, and the
// checkpoint is the stream's end.
func TestKilledMidBatchLosesNothing(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	last := publish(t, js, interleave(histories(60)))

	r := newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 10})
	var batches atomic.Int32
	killed := make(chan uint64, 1)
	r.SetBeforeCommit(func(ctx context.Context) {
		if batches.Add(1) == 5 {
			killed <- checkpoint(t, pool, "executions")
			<-ctx.Done() // the kill: the commit never happens
		}
	})
	run := start(t, r)
	var at uint64
	select {
	case at = <-killed:
	case <-time.After(waitFor):
		t.Fatal("the fifth batch never came")
	}
	run.stop()
	require.Equal(t, at, checkpoint(t, pool, "executions"), "the killed batch moved the checkpoint")
	require.Positive(t, at)
	require.Less(t, at, last)

	start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 10}))
	caughtUp(t, pool, "executions", last)
	got := dump(t, pool)
	require.Equal(t, 60, len(got))

	ref := pgtest.New(t)
	start(t, newRunner(t, projections.NewExecutions(nil), ref, js, projections.Config{}))
	caughtUp(t, ref, "executions", last)
	require.Equal(t, dump(t, ref), got)
}

// Two runners of one projection: only the one holding the lock writes; when it stops, the
// other takes over.
func TestOneWriterAtATime(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := histories(20)
	last := publish(t, js, interleave(hs[:10]))

	a := &counting{Projection: projections.NewExecutions(nil)}
	b := &counting{Projection: projections.NewExecutions(nil)}
	ra := start(t, newRunner(t, a, pool, js, projections.Config{BatchSize: 5}))
	rb := start(t, newRunner(t, b, pool, js, projections.Config{BatchSize: 5}))
	caughtUp(t, pool, "executions", last)

	writer, standby, stopWriter := a, b, ra.stop
	if b.count() > 0 {
		writer, standby, stopWriter = b, a, rb.stop
	}
	require.Equal(t, int(last), writer.count(), "one runner applied every event once")
	require.Zero(t, standby.count(), "the other wrote nothing")

	stopWriter()
	last = publish(t, js, interleave(hs[10:]))
	caughtUp(t, pool, "executions", last)
	require.Positive(t, standby.count(), "the standby took over")
	require.Equal(t, 20, len(dump(t, pool)))
}

// The writer's Postgres session dies (its lock goes with it): the runner retries, takes the
// lock again and goes on, dead-lettering nothing.
func TestSessionLostIsRetried(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := histories(20)
	last := publish(t, js, interleave(hs[:10]))
	start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{BatchSize: 5}))
	caughtUp(t, pool, "executions", last)

	var killed int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted`).Scan(&killed))
	require.Equal(t, 1, killed, "one session held the lock")

	last = publish(t, js, interleave(hs[10:]))
	caughtUp(t, pool, "executions", last)
	require.Equal(t, 20, len(dump(t, pool)))
	info, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	require.Zero(t, info.CachedInfo().State.Msgs, "nothing dead-lettered")
}
