package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
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
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// benchWorkflow is a 3-step api_call workflow's definition as an execution.queued event pins it,
// the shape memmie bench runs.
const benchWorkflow = `{"id":"bench_steps","revision":1,"steps":[` +
	`{"id":"s1","type":"api_call","service":"bench","endpoint":"/s1","method":"POST","input_map":{"n":"$.input.n"}},` +
	`{"id":"s2","type":"api_call","service":"bench","endpoint":"/s2","method":"POST","input_map":{"prev":"$.steps.s1.output.ok"}},` +
	`{"id":"s3","type":"api_call","service":"bench","endpoint":"/s3","method":"POST","input_map":{"prev":"$.steps.s2.output.ok"}}]}`

// benchHistory is the i-th execution of memmie bench's workload: queued, started, three steps
// (scheduled, reported, succeeded) and completed, 12 events.
func benchHistory(i int) []events.Event {
	id, at := execID(i), t0.Add(time.Duration(i)*time.Millisecond)
	k := 0
	ev := func(d events.ExecutionData) events.Event {
		k++
		return events.NewExecution(d, "bench", at.Add(time.Duration(k)*time.Microsecond))
	}
	h := []events.Event{
		ev(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "bench_steps", WorkflowRevision: 1, Workflow: []byte(benchWorkflow),
			InputSchema: []byte(`null`), OutputSchema: []byte(`null`), Input: map[string]any{"n": float64(i)}, Priority: i % 100,
			Seed: int64(i)}),
		ev(&events.ExecutionStarted{ExecutionID: id, Run: 1, Deadline: at.Add(time.Hour)}),
	}
	for s := 1; s <= 3; s++ {
		ref := events.AttemptRef{Run: 1, StepID: fmt.Sprintf("s%d", s), Attempt: 1}
		h = append(h,
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref, Deadline: at.Add(time.Minute),
				Request: events.Request{Service: "bench", Method: "POST", Path: fmt.Sprintf("/s%d", s), Body: map[string]any{"n": float64(i)}}}),
			ev(&events.StepReported{ExecutionID: id, AttemptRef: ref,
				Response: events.Response{StatusCode: 200, Body: map[string]any{"ok": true}, DurationMS: 1}}),
			ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: ref, Output: map[string]any{"ok": true}}))
	}
	return append(h, ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: map[string]any{"ok": true}}))
}

// loadHistories publishes the histories of n executions of memmie bench's workload to
// MEMMIE_EXECUTIONS, 100 at a time interleaved, and returns the events published.
func loadHistories(b *testing.B, js jetstream.JetStream, n int) int {
	b.Helper()
	var published int
	for from := 0; from < n; from += 100 {
		var hs [][]events.Event
		for i := from; i < min(from+100, n); i++ {
			hs = append(hs, benchHistory(i))
		}
		var futs []jetstream.PubAckFuture
		for _, ev := range interleave(hs) {
			data, err := events.Marshal(ev)
			require.NoError(b, err)
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: ev.Subject, Data: data, Header: nats.Header{"Nats-Msg-Id": []string{ev.ID}}})
			require.NoError(b, err)
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		published += len(futs)
	}
	return published
}

// BenchmarkRebuildExecutions measures the executions projection's rebuild as memmie bench
// measures it: MEMMIE_EXECUTIONS holds the histories of MEMMIE_BENCH_EXECUTIONS (default
// 20,000) executions of the bench's 3-step workflow (12 events each, three of which the
// projection folds), and each iteration rebuilds the projection into a fresh database from
// pgtest. The baseline is COPY of the same rows (those the rebuild made, read back) into an
// index-less copy of the executions table, measured in the same iteration; copy_ratio is the
// rebuild's events/s over COPY's rows/s, the ratio memmie bench reports. cpu-µs/event is the
// CPU time of the test process (the NATS server's included, Postgres' not) per event rebuilt,
// steadier than the rates on a busy machine.
//
//	go test -run '^$' -bench RebuildExecutions -benchtime 5x ./projections/
func BenchmarkRebuildExecutions(b *testing.B) {
	execs := 20000
	if s := os.Getenv("MEMMIE_BENCH_EXECUTIONS"); s != "" {
		var err error
		execs, err = strconv.Atoi(s)
		require.NoError(b, err)
	}
	ctx := context.Background()
	_, _, js := natstest.Run(b)
	require.NoError(b, stream.Ensure(ctx, js, streams.Configs(streams.Options{}), nil))
	n := loadHistories(b, js, execs)
	log := slog.New(slog.DiscardHandler)

	var (
		replayed int
		took     time.Duration
		copied   int
		copyTook time.Duration
		cpu      time.Duration // of this process, the NATS server's included
	)
	for b.Loop() {
		b.StopTimer()
		pool := pgtest.New(b)
		b.StartTimer()
		cpu0 := processCPU(b)
		res, err := projections.Rebuild(ctx, projections.NewExecutions(log), projections.RebuildConfig{Pool: pool, JS: js, Log: log})
		cpu += processCPU(b) - cpu0
		require.NoError(b, err)
		require.Equal(b, n, res.Replayed)
		replayed, took = replayed+res.Replayed, took+res.ReplayTook

		b.StopTimer()
		rows := executionRows(b, pool)
		require.Len(b, rows, execs)
		b.StartTimer()
		c, d := copyExecutions(b, pool, rows)
		copied, copyTook = copied+c, copyTook+d
		pool.Close()
	}
	rate, copyRate := float64(replayed)/took.Seconds(), float64(copied)/copyTook.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(copyRate, "copy_rows/s")
	b.ReportMetric(rate/copyRate, "copy_ratio")
	b.ReportMetric(float64(cpu.Microseconds())/float64(replayed), "cpu-µs/event")
}

// processCPU returns the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// executionRows reads the executions table's rows, typed as the rebuild's COPY types them.
func executionRows(b *testing.B, pool *pgxpool.Pool) [][]any {
	b.Helper()
	rs, err := pool.Query(context.Background(), `SELECT execution_id, workflow_id, workflow_revision, status, priority,
		input::text, output::text, error::text, run, provider_id, blob_id, queued_at, started_at, ended_at, updated_at,
		deltas_rejected::text FROM executions`)
	require.NoError(b, err)
	rows, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) ([]any, error) {
		var (
			id                                     [16]byte
			wf, status                             string
			rev, prio, run                         int32
			input, output, e, prov, blob, rejected *string
			queued, updated                        time.Time
			started, ended                         *time.Time
		)
		err := r.Scan(&id, &wf, &rev, &status, &prio, &input, &output, &e, &run, &prov, &blob, &queued, &started, &ended,
			&updated, &rejected)
		return []any{id, wf, rev, status, prio, input, output, e, run, prov, blob, queued, started, ended, updated, rejected}, err
	})
	require.NoError(b, err)
	return rows
}

// copyExecutions COPYs rows into a fresh index-less copy of the executions table and returns
// how many and how long it took.
func copyExecutions(b *testing.B, pool *pgxpool.Pool, rows [][]any) (int, time.Duration) {
	b.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `DROP TABLE IF EXISTS executions_copy; CREATE TABLE executions_copy (LIKE executions INCLUDING DEFAULTS)`)
	require.NoError(b, err)
	began := time.Now()
	n, err := pool.CopyFrom(ctx, pgx.Identifier{"executions_copy"}, []string{"execution_id", "workflow_id",
		"workflow_revision", "status", "priority", "input", "output", "error", "run", "provider_id", "blob_id",
		"queued_at", "started_at", "ended_at", "updated_at", "deltas_rejected"}, pgx.CopyFromRows(rows))
	require.NoError(b, err)
	return int(n), time.Since(began)
}
