package projections_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// all returns the projections of MEMMIE_EXECUTIONS.
func all() []projections.Projection {
	return []projections.Projection{projections.NewExecutions(nil), projections.NewQueued(nil), projections.NewSteps(nil)}
}

// dumpTable returns every row of a table as JSON, in a stable order.
func dumpTable(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT row_to_json(x)::text AS j FROM `+pgx.Identifier{table}.Sanitize()+` x ORDER BY j`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// tableIndexes returns a table's indexes as their definitions.
func tableIndexes(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname`, table)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}

// lastOf is the stream's last sequence.
func lastOf(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.Executions)
	require.NoError(t, err)
	return s.CachedInfo().State.LastSeq
}

// writer appends the events of queueHistory(from), queueHistory(from+1)..., two executions
// at a time every 20ms, until stopped.
type writer struct {
	js        jetstream.JetStream
	published atomic.Uint64 // the last sequence appended
	written   atomic.Int64  // the index of the next history
	stopping  chan struct{}
	done      chan struct{}
	err       error
}

func startWriter(t *testing.T, js jetstream.JetStream, from int) *writer {
	w := &writer{js: js, stopping: make(chan struct{}), done: make(chan struct{})}
	w.written.Store(int64(from))
	go func() {
		defer close(w.done)
		// Paced, so that the events written during a rebuild stay a few thousand.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := from; ; i += 2 {
			select {
			case <-w.stopping:
				return
			case <-tick.C:
			}
			var hs [][]events.Event
			for k := range 2 {
				hs = append(hs, queueHistory(i+k))
			}
			for _, ev := range interleave(hs) {
				data, err := events.Marshal(ev)
				if err != nil {
					w.err = err
					return
				}
				ack, err := stream.Append(context.Background(), js, streams.Executions,
					[]stream.Msg{{Subject: ev.Subject, Data: data, ID: ev.ID}}, stream.Expect{})
				if err != nil {
					w.err = err
					return
				}
				w.published.Store(ack.LastSeq)
			}
			w.written.Store(int64(i + 2))
		}
	}()
	t.Cleanup(w.stop)
	return w
}

// next is the index of the first history the writer has not written, once stopped.
func (w *writer) next() int { return int(w.written.Load()) }

func (w *writer) stop() {
	select {
	case <-w.stopping:
	default:
		close(w.stopping)
	}
	<-w.done
}

// waitPublished waits until the writer has appended up to seq.
func (w *writer) waitPublished(t *testing.T, seq uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return w.published.Load() >= seq }, waitFor, time.Millisecond,
		"the writer never reached %d (err %v)", seq, w.err)
}

// The rebuild-equality test: executions are written throughout, the live runners run
// throughout, and each projection is rebuilt meanwhile. Once the writing stops and everything
// caught up, every row of every table equals a database built incrementally from the start,
// and the live runners hold the stream's end.
func TestRebuildEqualsIncremental(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	ref := pgtest.New(t)
	publish(t, js, interleave(queueHistories(300)))

	for _, p := range all() {
		start(t, newRunner(t, p, pool, js, projections.Config{BatchSize: 20}))
		start(t, newRunner(t, p, ref, js, projections.Config{BatchSize: 7}))
	}
	indexes := map[string][]string{}
	for _, p := range all() {
		indexes[p.Name()] = tableIndexes(t, pool, p.Name())
	}
	// Every projection by its fast path (folded in memory, written with COPY), then every one
	// in batches through Apply, each round while executions are written, and checked once the
	// writing stopped.
	next := 300
	for _, fast := range []bool{true, false} {
		w := startWriter(t, js, next)
		for _, p := range all() {
			if !fast {
				p = plain{p}
			}
			var replayedAt, swapAt uint64
			res, err := projections.Rebuild(context.Background(), p, projections.RebuildConfig{
				Pool: pool, JS: js, BatchSize: 100, SwapLag: 20,
				Progress: func(pr projections.Progress) {
					switch pr.Phase {
					case projections.PhaseReplayed:
						// A tail to catch up: written after the replay's end.
						replayedAt = pr.Seq
						w.waitPublished(t, pr.Seq+50)
					case projections.PhaseCaughtUp:
						// and one that only the swap applies.
						w.waitPublished(t, pr.Seq+5)
					case projections.PhaseSwapped:
						swapAt = pr.Seq
					}
				},
			})
			require.NoError(t, err, p.Name())
			require.Greater(t, swapAt, replayedAt+50, "%s: the rebuild caught up a tail", p.Name())
			require.Equal(t, swapAt, res.Seq)
			require.Positive(t, res.Replayed)
			require.Greater(t, res.Events, res.Replayed)
			t.Logf("%s (fast %v): replayed %d events in %s, swapped at %d", p.Name(), fast, res.Replayed, res.ReplayTook, res.Seq)
			// The swapped-in table keeps the live one's indexes, names included.
			require.Equal(t, indexes[p.Name()], tableIndexes(t, pool, p.Name()), p.Name())
			// Written after the swap: the live runner carries on from it.
			w.waitPublished(t, swapAt+20)
		}
		w.stop()
		require.NoError(t, w.err)
		next = w.next()

		last := lastOf(t, js)
		require.Greater(t, last, uint64(1000))
		for _, p := range all() {
			caughtUp(t, pool, p.Name(), last)
			caughtUp(t, ref, p.Name(), last)
		}
		var rejected int
		require.NoError(t, ref.QueryRow(context.Background(),
			`SELECT count(*) FROM executions WHERE deltas_rejected IS NOT NULL`).Scan(&rejected))
		require.Positive(t, rejected, "the rows compared hold rejected outputs")
		for _, p := range all() {
			got, want := dumpTable(t, pool, p.Name()), dumpTable(t, ref, p.Name())
			require.NotEmpty(t, want)
			require.Equal(t, len(want), len(got), "%s (fast %v)", p.Name(), fast)
			for i := range want {
				require.Equal(t, want[i], got[i], "%s (fast %v) row %d", p.Name(), fast, i)
			}
		}
	}
	var schemas int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'memmie_rebuild_%'`).Scan(&schemas))
	require.Zero(t, schemas, "the builds' schemas are dropped")
}

// plain hides a projection's fast path from Rebuild: it replays in batches through Apply.
type plain struct{ projections.Projection }

// recording wraps a projection and keeps the sequences it applied.
type recording struct {
	projections.Projection
	mu   sync.Mutex
	seqs []uint64
}

func (r *recording) Apply(ctx context.Context, tx pgx.Tx, batch []projections.Event) error {
	if err := r.Projection.Apply(ctx, tx, batch); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range batch {
		r.seqs = append(r.seqs, ev.Seq)
	}
	return nil
}

func (r *recording) applied() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

// A live runner behind the rebuild (it holds events in a batch not yet written) notices, at
// its next write, that the swap moved its checkpoint, and goes on from there: it applies none
// of the events the rebuild applied.
func TestRebuildLiveRunnerStartsFromTheSwap(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	evs := interleave(queueHistories(200))
	require.Greater(t, len(evs), 130)

	// A batch is written only when full: the runner holds a partial one as long as the test.
	rec := &recording{Projection: projections.NewExecutions(nil)}
	start(t, newRunner(t, rec, pool, js, projections.Config{BatchSize: 50, BatchWait: time.Hour}))
	publish(t, js, evs[:50])
	caughtUp(t, pool, "executions", 50)
	publish(t, js, evs[50:80]) // held by the runner

	res, err := projections.Rebuild(context.Background(), projections.NewExecutions(nil), projections.RebuildConfig{Pool: pool, JS: js})
	require.NoError(t, err)
	require.Equal(t, uint64(80), res.Seq)
	require.Equal(t, uint64(80), checkpoint(t, pool, "executions"))

	// The runner's batch fills: it finds the checkpoint moved, and starts again after 80.
	publish(t, js, evs[80:130])
	caughtUp(t, pool, "executions", 130)
	for _, seq := range rec.applied()[50:] {
		require.Greater(t, seq, uint64(80), "the live runner applied again an event of the rebuild")
	}

	ref := pgtest.New(t)
	start(t, newRunner(t, projections.NewExecutions(nil), ref, js, projections.Config{}))
	caughtUp(t, ref, "executions", 130)
	require.Equal(t, dumpTable(t, ref, "executions"), dumpTable(t, pool, "executions"))
}

// A rebuild without a live runner rebuilds too, and a runner started afterwards goes on from
// its checkpoint.
func TestRebuildWithoutLiveRunner(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := queueHistories(60)
	last := publish(t, js, interleave(hs[:40]))
	ps := all()
	viaApply := pgtest.New(t)
	for _, p := range ps {
		for db, p := range map[*pgxpool.Pool]projections.Projection{pool: p, viaApply: plain{p}} {
			res, err := projections.Rebuild(context.Background(), p, projections.RebuildConfig{Pool: db, JS: js, BatchSize: 13})
			require.NoError(t, err)
			require.Equal(t, last, res.Seq)
			require.Equal(t, int(last), res.Events)
			require.Equal(t, last, checkpoint(t, db, p.Name()))
		}
		require.Equal(t, dumpTable(t, viaApply, p.Name()), dumpTable(t, pool, p.Name()), "%s: the fast path and Apply agree", p.Name())
	}
	last = publish(t, js, interleave(hs[40:]))
	counts := make([]*counting, len(ps))
	for i, p := range ps {
		counts[i] = &counting{Projection: p}
		start(t, newRunner(t, counts[i], pool, js, projections.Config{}))
	}
	ref := pgtest.New(t)
	for _, p := range ps {
		start(t, newRunner(t, p, ref, js, projections.Config{}))
	}
	for i, p := range ps {
		caughtUp(t, pool, p.Name(), last)
		caughtUp(t, ref, p.Name(), last)
		require.Equal(t, int(last-checkpointAfterRebuild(hs)), counts[i].count(), "%s applied only the new events", p.Name())
		require.Equal(t, dumpTable(t, ref, p.Name()), dumpTable(t, pool, p.Name()), p.Name())
	}
}

// checkpointAfterRebuild is how many events the first 40 histories of hs hold.
func checkpointAfterRebuild(hs [][]events.Event) uint64 {
	var n uint64
	for _, h := range hs[:40] {
		n += uint64(len(h))
	}
	return n
}

// A second rebuild of a projection while one runs is refused, clearly; the first one ends well.
func TestRebuildRefusesASecond(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	last := publish(t, js, interleave(queueHistories(20)))

	inFirst, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := projections.Rebuild(context.Background(), projections.NewExecutions(nil), projections.RebuildConfig{
			Pool: pool, JS: js,
			Progress: func(pr projections.Progress) {
				if pr.Phase == projections.PhaseReplayed {
					close(inFirst)
					<-release
				}
			},
		})
		first <- err
	}()
	select {
	case <-inFirst:
	case err := <-first:
		t.Fatalf("the first rebuild ended early: %v", err)
	}
	_, err := projections.Rebuild(context.Background(), projections.NewExecutions(nil), projections.RebuildConfig{Pool: pool, JS: js})
	require.ErrorIs(t, err, projections.ErrRebuildRunning)
	require.ErrorContains(t, err, "executions")
	// Another projection's rebuild is not held back.
	_, err = projections.Rebuild(context.Background(), projections.NewQueued(nil), projections.RebuildConfig{Pool: pool, JS: js})
	require.NoError(t, err)

	close(release)
	require.NoError(t, <-first)
	require.Equal(t, last, checkpoint(t, pool, "executions"))
	require.Len(t, dumpTable(t, pool, "executions"), 20)
	_, err = projections.Rebuild(context.Background(), projections.NewExecutions(nil), projections.RebuildConfig{Pool: pool, JS: js})
	require.NoError(t, err, "the lock went with the first rebuild")
	require.False(t, errors.Is(err, projections.ErrRebuildRunning))
}

// A replay's message that does not decode, and an event whose row Postgres refuses (jsonb
// cannot hold \u0000), are dead-lettered with their reasons, by the fast path as by Apply; the
// rest is rebuilt.
func TestRebuildDeadLetters(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(map[bool]string{true: "fast", false: "apply"}[fast], func(t *testing.T) {
			js := setup(t)
			pool := pgtest.New(t)
			hs := histories(10)
			hs[3][0].Data.(*events.ExecutionQueued).Input = "a\x00b"
			publish(t, js, interleave(hs[:5]))
			_, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "memmie.executions.x.garbage", Data: []byte("{not json"),
				Header: nats.Header{"Nats-Msg-Id": []string{"garbage-1"}}})
			require.NoError(t, err)
			last := publish(t, js, interleave(hs[5:]))

			var p projections.Projection = projections.NewExecutions(nil)
			if !fast {
				p = plain{p}
			}
			res, err := projections.Rebuild(context.Background(), p, projections.RebuildConfig{Pool: pool, JS: js})
			require.NoError(t, err)
			require.Equal(t, last, res.Seq)
			rows := dumpTable(t, pool, "executions")
			require.Len(t, rows, 9)

			dl, err := js.Stream(context.Background(), streams.DeadLetter)
			require.NoError(t, err)
			require.Equal(t, uint64(2), dl.CachedInfo().State.Msgs)
			var reasons []string
			for seq := uint64(1); seq <= 2; seq++ {
				msg, err := dl.GetMsg(context.Background(), seq)
				require.NoError(t, err)
				ev, err := events.Decode(msg.Data)
				require.NoError(t, err)
				reasons = append(reasons, ev.Data.(*events.DeadLetter).Reason)
			}
			require.Contains(t, reasons[0]+reasons[1], "decode event")
			require.Contains(t, reasons[0]+reasons[1], "22P05")

			ref := pgtest.New(t)
			start(t, newRunner(t, projections.NewExecutions(nil), ref, js, projections.Config{}))
			caughtUp(t, ref, "executions", last)
			require.Equal(t, dumpTable(t, ref, "executions"), rows)
		})
	}
}
