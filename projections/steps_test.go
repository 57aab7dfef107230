package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/projections"
)

// stepRow is what a test reads of an execution_steps row.
type stepRow struct {
	Run          int             `json:"run"`
	StepID       string          `json:"step_id"`
	Attempt      int             `json:"attempt"`
	Compensation bool            `json:"compensation"`
	Status       string          `json:"status"`
	Request      json.RawMessage `json:"request"`
	Output       json.RawMessage `json:"output"`
	Error        json.RawMessage `json:"error"`
	DurationMS   *int64          `json:"duration_ms"`
	StartedAt    *time.Time      `json:"started_at"`
	EndedAt      *time.Time      `json:"ended_at"`
}

// stepRows returns an execution's rows in key order.
func stepRows(t *testing.T, pool *pgxpool.Pool, id string) []stepRow {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT row_to_json(s)::text FROM execution_steps s WHERE execution_id = $1
		ORDER BY run, compensation, started_at, attempt, step_id`, id)
	require.NoError(t, err)
	raw, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	out := make([]stepRow, len(raw))
	for i, s := range raw {
		require.NoError(t, json.Unmarshal([]byte(s), &out[i]))
	}
	return out
}

// dumpSteps returns every row of execution_steps as JSON, in key order.
func dumpSteps(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rs, err := pool.Query(context.Background(), `SELECT row_to_json(s)::text FROM execution_steps s
		ORDER BY execution_id, run, step_id, attempt, compensation`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// The events come from the real engine calling an httptest service: a step retried then
// succeeding, a step failing and the one before it compensated, a skipped step, a step timed
// out. The
// projection, running beside the engine, folds them into one row per attempt; a replay from
// the first message changes no row.
func TestStepsRowsMatchTheEngine(t *testing.T) {
	var (
		mu    sync.Mutex
		calls = map[string]int{}
	)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.URL.Path]++
		n := calls[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/flaky" && n == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"busy"}`))
		case r.URL.Path == "/slow":
			// Slower than the step's timeout: the runner gives up first.
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		case r.URL.Path == "/ship":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"warehouse down"}`))
		default:
			_, _ = w.Write([]byte(`{"ok":true}`))
		}
	}))
	t.Cleanup(svc.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	t.Cleanup(cancel)
	_, _, js := natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{})))
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg, err := registry.New(js, registry.Config{Logger: log})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	var defs []definitions.Definition
	for i, src := range []string{`
id: flaky
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /flaky
    input_map: {n: $.input.n}
    retry: {max_attempts: 3, backoff_ms: 50, jitter: 0}
`, `
id: saga
steps:
  - id: reserve
    type: api_call
    service: svc
    endpoint: /reserve
    compensation: {service: svc, endpoint: /reserve/undo}
  - id: ship
    type: api_call
    service: svc
    endpoint: /ship
`, `
id: conditional
steps:
  - id: maybe
    type: api_call
    service: svc
    endpoint: /maybe
    condition: $.input.go == true
  - id: always
    type: transform
    input_map: {done: true}
`, `
id: slow
steps:
  - id: wait
    type: api_call
    service: svc
    endpoint: /slow
    timeout_seconds: 1
`} {
		def, err := definitions.Parse(string(rune('a'+i))+".yaml", []byte(src), "")
		require.NoError(t, err)
		defs = append(defs, def)
	}
	_, err = reg.Register(ctx, defs...)
	require.NoError(t, err)
	base, err := url.Parse(svc.URL)
	require.NoError(t, err)
	svcs, err := services.NewRegistry(services.Service{Name: "svc", BaseURL: base})
	require.NoError(t, err)
	eng, err := engine.New(js, engine.Config{Definitions: reg, Services: svcs, Logger: log})
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	t.Cleanup(func() {
		if err := eng.Close(context.Background()); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("close engine: %v", err)
		}
	})

	pool := pgtest.New(t)
	live := start(t, newRunner(t, projections.NewSteps(nil), pool, js, projections.Config{BatchSize: 3}))

	run := func(workflow string, input string) string {
		t.Helper()
		id, created, err := eng.Start(ctx, engine.StartRequest{WorkflowID: workflow, Input: []byte(input)})
		require.NoError(t, err)
		require.True(t, created)
		return id
	}
	flaky, saga, conditional := run("flaky", `{"n": 7}`), run("saga", `{}`), run("conditional", `{"go": false}`)
	slow := run("slow", `{}`)
	for id, want := range map[string]execution.Status{flaky: execution.StatusCompleted, saga: execution.StatusFailed,
		conditional: execution.StatusCompleted, slow: execution.StatusFailed} {
		require.Eventually(t, func() bool {
			s, err := eng.Execution(ctx, id)
			return err == nil && s.Status.Terminal()
		}, waitFor, 20*time.Millisecond, "execution %s never ended", id)
		s, err := eng.Execution(ctx, id)
		require.NoError(t, err)
		require.Equal(t, want, s.Status, id)
	}
	info, err := js.Stream(ctx, streams.Executions)
	require.NoError(t, err)
	last := info.CachedInfo().State.LastSeq
	caughtUp(t, pool, "execution_steps", last)

	check := func(r stepRow, step string, attempt int, comp bool, status string) {
		t.Helper()
		require.Equal(t, step, r.StepID)
		require.Equal(t, 1, r.Run)
		require.Equal(t, attempt, r.Attempt, step)
		require.Equal(t, comp, r.Compensation, step)
		require.Equal(t, status, r.Status, step)
		require.NotNil(t, r.StartedAt, step)
		require.NotNil(t, r.EndedAt, step)
		require.False(t, r.EndedAt.Before(*r.StartedAt), step)
		require.NotNil(t, r.DurationMS, step)
		require.GreaterOrEqual(t, *r.DurationMS, int64(0), step)
	}

	rows := stepRows(t, pool, flaky)
	require.Len(t, rows, 2)
	check(rows[0], "call", 1, false, "retry_scheduled")
	require.JSONEq(t, `{"service":"svc","method":"POST","path":"/flaky","body_bytes":7,"timeout_ms":30000}`, string(rows[0].Request))
	var e struct {
		Kind       string `json:"kind"`
		StatusCode int    `json:"status_code"`
	}
	require.NoError(t, json.Unmarshal(rows[0].Error, &e))
	require.Equal(t, "http", e.Kind)
	require.Equal(t, 503, e.StatusCode)
	require.Equal(t, "null", string(rows[0].Output))
	check(rows[1], "call", 2, false, "succeeded")
	require.JSONEq(t, `{"ok":true}`, string(rows[1].Output))
	require.Equal(t, "null", string(rows[1].Error))
	require.False(t, rows[1].StartedAt.Before(*rows[0].EndedAt), "the retry starts after the first attempt ended")

	rows = stepRows(t, pool, saga)
	require.Len(t, rows, 3)
	check(rows[0], "reserve", 1, false, "succeeded")
	check(rows[1], "ship", 1, false, "failed")
	require.NoError(t, json.Unmarshal(rows[1].Error, &e))
	require.Equal(t, 500, e.StatusCode)
	check(rows[2], "reserve", 1, true, "succeeded")
	require.JSONEq(t, `{"service":"svc","method":"POST","path":"/reserve/undo","body_bytes":0,"timeout_ms":30000}`, string(rows[2].Request))

	rows = stepRows(t, pool, conditional)
	require.Len(t, rows, 2)
	check(rows[0], "maybe", 0, false, "skipped")
	require.Equal(t, "null", string(rows[0].Request))
	check(rows[1], "always", 1, false, "succeeded")
	require.JSONEq(t, `{"done":true}`, string(rows[1].Output))

	rows = stepRows(t, pool, slow)
	require.Len(t, rows, 1)
	check(rows[0], "wait", 1, false, "timed_out")
	require.NoError(t, json.Unmarshal(rows[0].Error, &e))
	require.Equal(t, "timeout", e.Kind)
	require.GreaterOrEqual(t, *rows[0].DurationMS, int64(1000), "the runner waited out the timeout")

	// A replay from the first message reads every event again and changes no row.
	live.stop()
	before := dumpSteps(t, pool)
	require.Len(t, before, 8)
	_, err = pool.Exec(ctx, `UPDATE projection_checkpoints SET last_seq = 0 WHERE projection = 'execution_steps'`)
	require.NoError(t, err)
	c := &counting{Projection: projections.NewSteps(nil)}
	start(t, newRunner(t, c, pool, js, projections.Config{BatchSize: 5}))
	caughtUp(t, pool, "execution_steps", last)
	require.Equal(t, int(last), c.count(), "the replay read every event again")
	require.Equal(t, before, dumpSteps(t, pool))

	// A rebuild into an empty database, in one batch, makes the same rows.
	ref := pgtest.New(t)
	start(t, newRunner(t, projections.NewSteps(nil), ref, js, projections.Config{}))
	caughtUp(t, ref, "execution_steps", last)
	require.Equal(t, before, dumpSteps(t, ref))
}

// BenchmarkStepsApply measures the execution_steps projection's apply rate over 15k events
// (5k executions of one attempt: scheduled, reported, succeeded, interleaved so that each batch
// writes every row it touches), in batches of 1000, each in a transaction as the Runner's writer
// does without NATS. The events are decoded before the clock starts.
//
//	go test -run '^$' -bench StepsApply ./projections/
func BenchmarkStepsApply(b *testing.B) {
	const execs, batch = 5000, 1000
	ctx := context.Background()
	hs := make([][]events.Event, execs)
	for i := range hs {
		id, at := execID(i), t0.Add(time.Duration(i)*time.Millisecond)
		ref := events.AttemptRef{Run: 1, StepID: "call", Attempt: 1}
		hs[i] = []events.Event{
			events.NewExecution(&events.StepScheduled{ExecutionID: id, AttemptRef: ref,
				Request: events.Request{Service: "svc", Method: "POST", Path: "/p", Body: map[string]any{"n": i}}}, "b", at),
			events.NewExecution(&events.StepReported{ExecutionID: id, AttemptRef: ref,
				Response: events.Response{StatusCode: 200, Body: map[string]any{"ok": true}, DurationMS: 3}}, "b", at.Add(time.Millisecond)),
			events.NewExecution(&events.StepSucceeded{ExecutionID: id, AttemptRef: ref, Output: map[string]any{"ok": true}}, "b", at.Add(2*time.Millisecond)),
		}
	}
	var evs []projections.Event
	for i, ev := range interleave(hs) {
		data, err := events.Marshal(ev)
		require.NoError(b, err)
		dec, err := events.Decode(data)
		require.NoError(b, err)
		evs = append(evs, projections.Event{Event: dec, Seq: uint64(i + 1)})
	}
	pool := pgtest.New(b)
	p := projections.NewSteps(nil)
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		_, err := pool.Exec(ctx, `TRUNCATE execution_steps`)
		require.NoError(b, err)
		b.StartTimer()
		began := time.Now()
		for from := 0; from < len(evs); from += batch {
			require.NoError(b, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				return p.Apply(ctx, tx, evs[from:min(from+batch, len(evs))])
			}))
		}
		took += time.Since(began)
	}
	var n int
	require.NoError(b, pool.QueryRow(ctx, `SELECT count(*) FROM execution_steps WHERE status = 'succeeded'`).Scan(&n))
	require.Equal(b, execs, n)
	b.ReportMetric(float64(len(evs))*float64(b.N)/took.Seconds(), "events/s")
}
