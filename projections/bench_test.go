package projections_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// BenchmarkExecutionsApply measures the executions projection's apply rate over 20k events
// (5k executions of queued, started, a step, completed), applied in batches of 1000, each in a
// transaction with its checkpoint, as the Runner's writer does without NATS. The Runner decodes on
// its reader goroutine, ahead of the writer; decode_events/s is that decoding's rate, measured
// apart. The baseline is a raw COPY of 20k rows of the same table's shape
// into a scratch table, measured in the same run; copy_ratio is apply rate over COPY rate.
// "interleaved" runs all 5k executions at once, so that each batch writes every row it touches
// (three writes per execution); "50-at-a-time" runs them 50 at a time, so that a batch holds
// most of an execution's events and writes its row about once.
//
//	go test -run '^$' -bench ExecutionsApply ./projections/
func BenchmarkExecutionsApply(b *testing.B) {
	const execs = 5000
	hs := histories(execs * 4)
	var kept [][]events.Event
	for i := 0; i < len(hs); i += 4 {
		kept = append(kept, hs[i]) // the completed ones: four events each
	}
	for _, bc := range []struct {
		name       string
		concurrent int
	}{{"interleaved", execs}, {"50-at-a-time", 50}} {
		b.Run(bc.name, func(b *testing.B) {
			var raw [][]byte
			for from := 0; from < len(kept); from += bc.concurrent {
				for _, ev := range interleave(kept[from:min(from+bc.concurrent, len(kept))]) {
					data, err := events.Marshal(ev)
					require.NoError(b, err)
					raw = append(raw, data)
				}
			}
			benchmarkApply(b, raw, execs)
		})
	}
}

func benchmarkApply(b *testing.B, raw [][]byte, execs int) {
	const batch = 1000
	ctx := context.Background()
	pool := pgtest.New(b)
	p := projections.NewExecutions(nil)
	_, err := pool.Exec(ctx, `CREATE TABLE executions_copy (LIKE executions INCLUDING DEFAULTS)`)
	require.NoError(b, err)

	var applyTime, copyTime, decodeTime time.Duration
	for b.Loop() {
		b.StopTimer()
		_, err := pool.Exec(ctx, `TRUNCATE executions, executions_copy, projection_checkpoints`)
		require.NoError(b, err)
		b.StartTimer()

		began := time.Now()
		evs := make([]projections.Event, 0, len(raw))
		for i, data := range raw {
			ev, err := events.Decode(data)
			require.NoError(b, err)
			evs = append(evs, projections.Event{Event: ev, Seq: uint64(i + 1)})
		}
		decodeTime += time.Since(began)

		began = time.Now()
		for from := 0; from < len(evs); from += batch {
			part := evs[from:min(from+batch, len(evs))]
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if err := p.Apply(ctx, tx, part); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, stream, last_seq) VALUES ('executions', 's', $1)
					ON CONFLICT (projection, stream) DO UPDATE SET last_seq = EXCLUDED.last_seq`, int64(part[len(part)-1].Seq))
				return err
			})
			require.NoError(b, err)
		}
		applyTime += time.Since(began)

		began = time.Now()
		rows := make([][]any, len(raw))
		at := time.Now()
		for i := range rows {
			rows[i] = []any{execID(i), "wf-0", 1, "completed", i % 100, `{"n": 1}`, `{"ok": true}`, nil, 1, "prov", nil,
				at, at, at, at}
		}
		_, err = pool.CopyFrom(ctx, pgx.Identifier{"executions_copy"}, []string{"execution_id", "workflow_id",
			"workflow_revision", "status", "priority", "input", "output", "error", "run", "provider_id", "blob_id",
			"queued_at", "started_at", "ended_at", "updated_at"}, pgx.CopyFromRows(rows))
		require.NoError(b, err)
		copyTime += time.Since(began)
	}
	var n int
	require.NoError(b, pool.QueryRow(ctx, `SELECT count(*) FROM executions WHERE status = 'completed'`).Scan(&n))
	require.Equal(b, execs, n)

	iters := float64(b.N)
	applyRate := float64(len(raw)) * iters / applyTime.Seconds()
	copyRate := float64(len(raw)) * iters / copyTime.Seconds()
	b.ReportMetric(applyRate, "events/s")
	b.ReportMetric(copyRate, "copy_rows/s")
	b.ReportMetric(applyRate/copyRate, "copy_ratio")
	b.ReportMetric(float64(len(raw))*iters/decodeTime.Seconds(), "decode_events/s")
}

// BenchmarkRebuild measures each projection's apply rate during a rebuild: Rebuild's replay of
// MEMMIE_EXECUTIONS (10k executions of queued, started, a step scheduled, reported and
// succeeded, completed: 60k events, 50 executions at a time) from the embedded NATS server into
// fresh tables, decoding and the reading of the stream included. The baseline is a raw COPY of
// as many rows of the executions table's shape into a scratch table, measured in the same run;
// copy_ratio is the replay's events/s over COPY's rows/s. executions-apply rebuilds the
// executions projection without its fast path, in batches through Apply. memmie projections
// rebuild runs with GOGC=400 (see tuneGC in cmd/memmie); to measure as it runs:
//
//	GOGC=400 go test -run '^$' -bench Rebuild ./projections/
func BenchmarkRebuild(b *testing.B) {
	const execs = 10000
	ctx := context.Background()
	_, _, js := natstest.Run(b)
	require.NoError(b, stream.Ensure(ctx, js, streams.Configs(streams.Options{}), nil))
	hs := make([][]events.Event, execs)
	for i := range hs {
		id, at := execID(i), t0.Add(time.Duration(i)*time.Millisecond)
		ev := func(d events.ExecutionData, k int) events.Event {
			return events.NewExecution(d, "bench", at.Add(time.Duration(k)*time.Microsecond))
		}
		ref := events.AttemptRef{Run: 1, StepID: "call", Attempt: 1}
		hs[i] = []events.Event{
			ev(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", WorkflowRevision: 1, Workflow: []byte(`{}`),
				InputSchema: []byte(`null`), OutputSchema: []byte(`null`), Input: map[string]any{"n": float64(i)}, Priority: i % 100,
				ProviderID: "prov"}, 0),
			ev(&events.ExecutionStarted{ExecutionID: id, Run: 1}, 1),
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref,
				Request: events.Request{Service: "svc", Method: "POST", Path: "/p", Body: map[string]any{"n": i}}}, 2),
			ev(&events.StepReported{ExecutionID: id, AttemptRef: ref,
				Response: events.Response{StatusCode: 200, Body: map[string]any{"ok": true}, DurationMS: 3}}, 3),
			ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: ref, Output: map[string]any{"ok": true}}, 4),
			ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: map[string]any{"ok": true}}, 5),
		}
	}
	var n int
	for from := 0; from < execs; from += 50 {
		var futs []jetstream.PubAckFuture
		for _, ev := range interleave(hs[from:min(from+50, execs)]) {
			data, err := events.Marshal(ev)
			require.NoError(b, err)
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: ev.Subject, Data: data, Header: nats.Header{"Nats-Msg-Id": []string{ev.ID}}})
			require.NoError(b, err)
			futs = append(futs, f)
			n++
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
	pool := pgtest.New(b)
	_, err := pool.Exec(ctx, `CREATE TABLE executions_copy (LIKE executions INCLUDING DEFAULTS)`)
	require.NoError(b, err)

	// Each projection by its fast path, and the executions projection in batches through Apply
	// too, as a projection without a fast path rebuilds.
	type rebuilt struct {
		name string
		p    projections.Projection
	}
	var ps []rebuilt
	for _, p := range []projections.Projection{projections.NewExecutions(nil), projections.NewQueued(nil), projections.NewSteps(nil)} {
		ps = append(ps, rebuilt{p.Name(), p})
	}
	ps = append(ps, rebuilt{"executions-apply", plain{projections.NewExecutions(nil)}})
	for _, rb := range ps {
		p := rb.p
		b.Run(rb.name, func(b *testing.B) {
			var (
				events   int
				took     time.Duration
				copyTime time.Duration
			)
			for b.Loop() {
				res, err := projections.Rebuild(ctx, p, projections.RebuildConfig{Pool: pool, JS: js, Log: slog.New(slog.DiscardHandler)})
				require.NoError(b, err)
				require.Equal(b, n, res.Replayed)
				events, took = events+res.Replayed, took+res.ReplayTook

				b.StopTimer()
				_, err = pool.Exec(ctx, `TRUNCATE executions_copy`)
				require.NoError(b, err)
				b.StartTimer()
				began := time.Now()
				rows := make([][]any, n)
				at := time.Now()
				for i := range rows {
					// Typed as the rebuild's COPY types them, for pgx's binary encoding.
					rows[i] = []any{[16]byte(uuid.New()), "wf-0", int32(1), "completed", int32(i % 100), `{"n": 1}`, `{"ok": true}`,
						nil, int32(1), "prov", nil, at, at, at, at}
				}
				_, err = pool.CopyFrom(ctx, pgx.Identifier{"executions_copy"}, []string{"execution_id", "workflow_id",
					"workflow_revision", "status", "priority", "input", "output", "error", "run", "provider_id", "blob_id",
					"queued_at", "started_at", "ended_at", "updated_at"}, pgx.CopyFromRows(rows))
				require.NoError(b, err)
				copyTime += time.Since(began)
			}
			rate := float64(events) / took.Seconds()
			copyRate := float64(n*b.N) / copyTime.Seconds()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(copyRate, "copy_rows/s")
			b.ReportMetric(rate/copyRate, "copy_ratio")
		})
	}
}
