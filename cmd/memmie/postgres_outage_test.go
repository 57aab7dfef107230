package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pglocal"
	"github.com/memmie/memmie/migrations"
	"github.com/memmie/memmie/projections"
)

// outage is how long the test keeps Postgres stopped, as issue 9 asks.
const outage = 30 * time.Second

// TestServeSurvivesAPostgresOutage runs serve under a steady load of executions, stops its
// Postgres (a cluster of the test's own) for 30 s and starts it again. Meanwhile /readyz fails
// naming postgres, the executions started go on running on NATS and complete, and serve stays
// up; once Postgres is back /readyz recovers and every projection catches up to its stream,
// with tables equal, row for row, to those of a rebuild from the streams into a fresh database.
func TestServeSurvivesAPostgresOutage(t *testing.T) {
	ctx := t.Context()
	pgCfg := pglocal.Config{DataDir: filepath.Join(devDataDir(t), "pg"), NoSync: true}
	pg, err := pglocal.Start(ctx, pgCfg)
	require.NoError(t, err)
	t.Cleanup(func() { stopPostgres(t, pg) })
	liveURL, rebuildURL := createDatabase(t, pg.URL(), "live"), createDatabase(t, pg.URL(), "rebuild")

	svc := newEchoService(t)
	t.Setenv("MEMMIE_SERVICE_SVC_URL", svc.URL)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "workflows", "ok.yaml"), `id: ok
steps:
  - {id: first, type: api_call, service: svc, endpoint: /echo, input_map: {n: $.input.n}}
  - {id: second, type: api_call, service: svc, endpoint: /echo, input_map: {n: $.input.n}}
`)
	writeFile(t, filepath.Join(dir, "workflows", "fail.yaml"),
		"id: fail\nsteps: [{id: call, type: api_call, service: svc, endpoint: /fail}]\n")
	nats, _, js := natstest.Run(t)
	serve := startBackground(t, "serve", "--nats-url", nats.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--database-url", liveURL, "--definitions", dir)
	apiURL := serve.ready(t)
	ended := watchEnds(t, js)
	live, err := pgxpool.New(ctx, liveURL)
	require.NoError(t, err)
	t.Cleanup(live.Close)

	load := startLoad(t, apiURL)
	ready := watchReadyz(t, apiURL)
	alive := func(when string) {
		t.Helper()
		select {
		case err := <-serve.done:
			serve.done <- err
			t.Fatalf("serve exited %s: %v\n%s", when, err, serve.out.String())
		default:
		}
	}
	serve.waitWithin(t, 60*time.Second, "executions projected before the outage", func() (bool, string) {
		n, err := countRows(ctx, live, "executions", "status IN ('completed', 'failed')")
		return err == nil && n >= 20, fmt.Sprintf("%d ended executions projected (%v)", n, err)
	})
	_, ok := ready.last()
	require.True(t, ok, "/readyz before the outage:\n%s", serve.out.String())

	// The fault: Postgres stops (fast shutdown, every session cut) while the load goes on.
	stoppedAt := time.Now()
	load.phase.Store(phaseOutage)
	stopPostgres(t, pg)
	serve.waitWithin(t, 15*time.Second, "/readyz failing with postgres", func() (bool, string) {
		r, ok := ready.last()
		return !ok && r.dependency == "postgres", fmt.Sprintf("last /readyz: %v", r)
	})
	readyzFailed := time.Since(stoppedAt)
	time.Sleep(time.Until(stoppedAt.Add(outage))) // the outage itself; the load and /readyz polls go on
	alive("during the outage")

	// Postgres is still down: every execution started since it stopped ends, on NATS alone,
	// and the API answers for them from the streams. The load pauses meanwhile, so that on a
	// busy machine the check does not wait behind new executions.
	load.paused.Store(true)
	during := load.started(phaseOutage)
	require.NotEmpty(t, during)
	serve.waitWithin(t, 60*time.Second, "the executions started during the outage ending while Postgres is down", func() (bool, string) {
		missing := ended.missing(during)
		return len(missing) == 0, fmt.Sprintf("%d of %d not ended, e.g.%s", len(missing), len(during), describe(apiURL, missing))
	})
	for _, id := range []string{during[0], during[len(during)-1]} {
		var v execView
		getJSON(t, apiURL+"/v1/executions/"+id, &v)
		assert.Contains(t, []string{"completed", "failed"}, v.Status, id)
		var evs struct {
			Events []json.RawMessage `json:"events"`
		}
		getJSON(t, apiURL+"/v1/executions/"+id+"/events", &evs)
		assert.NotEmpty(t, evs.Events, id)
	}
	// The lists, served from Postgres, say what is missing: the server is not broken.
	for _, path := range []string{"/v1/executions", "/v1/queue"} {
		status, body := getBody(t, apiURL+path)
		assert.Equal(t, http.StatusServiceUnavailable, status, "GET %s during the outage: %s", path, body)
		assert.Contains(t, body, `"code":"unavailable"`, path)
		assert.Contains(t, body, "postgres", path)
	}
	for _, r := range ready.since(stoppedAt.Add(readyzFailed)) {
		require.False(t, r.ok, "/readyz answered ready while Postgres was down: %v", r)
		require.Equal(t, "postgres", r.dependency, "/readyz during the outage: %v", r)
	}
	alive("during the outage")
	downFor := time.Since(stoppedAt)

	// Postgres starts again, on the same data and socket.
	pg, err = pglocal.Start(ctx, pgCfg)
	require.NoError(t, err)
	startedAt := time.Now()
	load.phase.Store(phaseAfter)
	load.paused.Store(false)
	serve.waitWithin(t, 30*time.Second, "/readyz ready again", func() (bool, string) {
		r, ok := ready.last()
		return ok && r.at.After(startedAt), fmt.Sprintf("last /readyz: %v", r)
	})
	readyzRecovered := time.Since(startedAt)
	// Catching up: every projection's checkpoint reaches the end its stream had at the restart.
	ps := runProjections(nil)
	atRestart := lastSeqs(t, js, ps)
	serve.waitWithin(t, 60*time.Second, "the projections catching up with the outage", func() (bool, string) {
		cps, err := checkpoints(ctx, live, ps)
		for _, p := range ps {
			if err != nil || cps[p.Name()] < atRestart[p.Stream()] {
				return false, fmt.Sprintf("checkpoints %v, the streams at the restart %v (%v)", cps, atRestart, err)
			}
		}
		return true, ""
	})
	caughtUp := time.Since(startedAt)

	// The load stops; once every execution has ended, the projections reach their streams' ends.
	load.stop(t)
	all := load.started(phaseBefore, phaseOutage, phaseAfter)
	serve.waitWithin(t, 60*time.Second, "every execution ending", func() (bool, string) {
		missing := ended.missing(all)
		return len(missing) == 0, fmt.Sprintf("%d of %d not ended", len(missing), len(all))
	})
	final := waitCaughtUp(t, ctx, serve, js, live, ps)
	alive("after the outage")

	// A rebuild: the same projections from the first message into the fresh database.
	rebuild := rebuildPool(t, rebuildURL)
	rebuildStart := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range runProjections(nil) {
		r, err := projections.NewRunner(p, projections.Config{Pool: rebuild, JS: js, Log: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		wg.Go(func() { _ = r.Run(runCtx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	serve.waitWithin(t, 60*time.Second, "the rebuild reaching the live checkpoints", func() (bool, string) {
		cps, err := checkpoints(ctx, rebuild, ps)
		return err == nil && equalCheckpoints(cps, final), fmt.Sprintf("rebuilt %v, live %v (%v)", cps, final, err)
	})
	rebuilt := time.Since(rebuildStart)
	cancel()
	wg.Wait()

	for _, p := range ps {
		liveRows, err := tableRows(ctx, live, p.Name())
		require.NoError(t, err)
		rebuiltRows, err := tableRows(ctx, rebuild, p.Name())
		require.NoError(t, err)
		// Nothing is dead-lettered here (checked below), and no blob event is published.
		if p.Name() != "dead_letters" && p.Name() != "blobs" {
			require.NotEmpty(t, liveRows, p.Name())
		}
		assertSameRows(t, p.Name(), liveRows, rebuiltRows)
	}
	n, err := countRows(ctx, live, "executions", "")
	require.NoError(t, err)
	require.Equal(t, len(all), n, "one executions row per execution started")
	require.Zero(t, load.failures.Load(), "POST /v1/executions failed during the test")
	dl, err := js.Stream(ctx, streams.DeadLetter)
	require.NoError(t, err)
	info, err := dl.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing is dead-lettered for Postgres being down")
	require.NotContains(t, serve.out.String(), "panic")

	t.Logf("executions started: %d before, %d during the %s outage (all %d ended while Postgres was down), %d after; "+
		"/readyz failed %s after the stop and was ready %s after the start; the projections caught up %s after the start; the rebuild took %s",
		len(load.started(phaseBefore)), len(during), downFor.Round(time.Second), len(during), len(load.started(phaseAfter)),
		readyzFailed.Round(time.Millisecond), readyzRecovered.Round(time.Millisecond), caughtUp.Round(time.Millisecond), rebuilt.Round(time.Millisecond))
	require.NoError(t, serve.stop(t))
}

// waitWithin polls cond until it holds or the deadline passes; then it fails the test with
// what cond last said and the end of what serve printed.
func (bg *background) waitWithin(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			lines := strings.Split(bg.out.String(), "\n")
			t.Fatalf("%s: not within %s\n%s\nthe last lines of serve:\n%s", what, within, state,
				strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describe returns what the API says of the first few executions of ids, for a failure.
func describe(apiURL string, ids []string) string {
	var b strings.Builder
	for _, id := range ids[:min(3, len(ids))] {
		resp, err := http.Get(apiURL + "/v1/executions/" + id)
		if err != nil {
			fmt.Fprintf(&b, "\n%s: %v", id, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		fmt.Fprintf(&b, "\n%s: %s", id, body)
	}
	return b.String()
}

// getBody returns the status and body of a GET.
func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// stopPostgres stops the server and waits for it to exit.
func stopPostgres(t *testing.T, pg *pglocal.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, pg.Stop(ctx))
}

// createDatabase creates the database name on the server of superURL and returns its URL.
func createDatabase(t *testing.T, superURL, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, superURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	u, err := url.Parse(superURL)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// rebuildPool migrates the database of dbURL, as serve does, and returns a pool on it.
func rebuildPool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	require.NoError(t, err)
	_, err = migrations.Up(t.Context(), db)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// newEchoService answers /fail with 400 and anything else with the body it was sent.
func newEchoService(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error": "no"}`))
			return
		}
		_, _ = fmt.Fprintf(w, `{"echo": %s}`, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Phases of the load: when an execution was started.
const (
	phaseBefore = iota
	phaseOutage
	phaseAfter
)

// outageLoad starts executions through the API at a steady rate until stopped: ok, and every fifth
// one fail.
type outageLoad struct {
	phase    atomic.Int32
	paused   atomic.Bool
	failures atomic.Int32 // POSTs that did not answer 202
	mu       sync.Mutex
	ids      [3][]string // per phase
	cancel   context.CancelFunc
	done     chan struct{}
}

// loadEvery is the interval between two starts: 20 executions per second.
const loadEvery = 50 * time.Millisecond

func startLoad(t *testing.T, apiURL string) *outageLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &outageLoad{cancel: cancel, done: make(chan struct{})}
	client := &http.Client{Timeout: 20 * time.Second}
	var wg sync.WaitGroup
	go func() {
		defer close(l.done)
		defer wg.Wait()
		tick := time.NewTicker(loadEvery)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if l.paused.Load() {
				continue
			}
			wf := "ok"
			if n%5 == 4 {
				wf = "fail"
			}
			phase := l.phase.Load()
			wg.Go(func() { // a slow answer must not slow the load down
				id, err := postExecution(client, apiURL, wf, n)
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.failures.Add(1)
					t.Logf("start execution %d: %v", n, err)
					return
				}
				l.ids[phase] = append(l.ids[phase], id)
			})
		}
	}()
	t.Cleanup(func() { l.stop(t) })
	return l
}

func postExecution(client *http.Client, apiURL, workflow string, n int) (string, error) {
	// One priority: with several, a backlog on a busy machine would starve the lowest, and the
	// outage's executions with them.
	body := fmt.Sprintf(`{"workflow_id": %q, "input": {"n": %d}}`, workflow, n)
	resp, err := client.Post(apiURL+"/v1/executions", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	var r struct {
		ExecutionID string `json:"execution_id"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.ExecutionID == "" {
		return "", fmt.Errorf("answer %s: %v", b, err)
	}
	return r.ExecutionID, nil
}

// stop ends the load and waits for the starts in flight.
func (l *outageLoad) stop(t *testing.T) {
	l.cancel()
	select {
	case <-l.done:
	case <-time.After(time.Minute):
		t.Error("the load did not stop within a minute")
	}
}

// started returns the ids of the executions started in the phases.
func (l *outageLoad) started(phases ...int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, p := range phases {
		ids = append(ids, l.ids[p]...)
	}
	return ids
}

// endedRuns records the executions whose run ended (completed or failed), read from the stream:
// what the engine did, without Postgres.
type endedRuns struct {
	mu  sync.Mutex
	ids map[string]bool
}

func watchEnds(t *testing.T, js jetstream.JetStream) *endedRuns {
	t.Helper()
	e := &endedRuns{ids: map[string]bool{}}
	cons, err := js.OrderedConsumer(t.Context(), streams.Executions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"memmie.executions.*.completed", "memmie.executions.*.failed"},
	})
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := strings.Split(m.Subject(), ".")[2]
		e.mu.Lock()
		e.ids[id] = true
		e.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return e
}

// missing returns the ids that have not ended.
func (e *endedRuns) missing(ids []string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, id := range ids {
		if !e.ids[id] {
			out = append(out, id)
		}
	}
	return out
}

// readyzAnswer is one answer of /readyz.
type readyzAnswer struct {
	at         time.Time
	ok         bool
	status     int
	dependency string
	err        error
}

func (a readyzAnswer) String() string {
	if a.err != nil {
		return fmt.Sprintf("at %s: %v", a.at.Format(time.StampMilli), a.err)
	}
	return fmt.Sprintf("at %s: %d %s", a.at.Format(time.StampMilli), a.status, a.dependency)
}

// readyzLog polls /readyz every 50ms and keeps every answer.
type readyzLog struct {
	mu      sync.Mutex
	answers []readyzAnswer
}

func watchReadyz(t *testing.T, apiURL string) *readyzLog {
	r := &readyzLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			a := readyzAnswer{at: time.Now()}
			resp, err := client.Get(apiURL + "/readyz")
			if err != nil {
				a.err = err
			} else {
				var body struct {
					Error struct {
						Dependency string `json:"dependency"`
					} `json:"error"`
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				_ = json.Unmarshal(b, &body)
				a.status, a.ok, a.dependency = resp.StatusCode, resp.StatusCode == http.StatusOK, body.Error.Dependency
			}
			r.mu.Lock()
			r.answers = append(r.answers, a)
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// last returns the latest answer and whether it said ready.
func (r *readyzLog) last() (readyzAnswer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.answers) == 0 {
		return readyzAnswer{}, false
	}
	a := r.answers[len(r.answers)-1]
	return a, a.ok
}

// since returns the answers of the requests made at or after at.
func (r *readyzLog) since(at time.Time) []readyzAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []readyzAnswer
	for _, a := range r.answers {
		if !a.at.Before(at) {
			out = append(out, a)
		}
	}
	return out
}

func countRows(ctx context.Context, pool *pgxpool.Pool, table, where string) (int, error) {
	q := "SELECT count(*) FROM " + pgx.Identifier{table}.Sanitize()
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	err := pool.QueryRow(ctx, q).Scan(&n)
	return n, err
}

// lastSeqs returns the last sequence of each projection's stream.
func lastSeqs(t *testing.T, js jetstream.JetStream, ps []projections.Projection) map[string]uint64 {
	t.Helper()
	seqs := map[string]uint64{}
	for _, p := range ps {
		s, err := js.Stream(t.Context(), p.Stream())
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		seqs[p.Stream()] = info.State.LastSeq
	}
	return seqs
}

// checkpoints returns each projection's checkpoint, by name.
func checkpoints(ctx context.Context, pool *pgxpool.Pool, ps []projections.Projection) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, p := range ps {
		var last int64
		err := pool.QueryRow(ctx, `SELECT last_seq FROM projection_checkpoints WHERE projection = $1 AND stream = $2`,
			p.Name(), p.Stream()).Scan(&last)
		if err != nil && err != pgx.ErrNoRows {
			return nil, err
		}
		out[p.Name()] = uint64(last)
	}
	return out, nil
}

func equalCheckpoints(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitCaughtUp waits until every projection's checkpoint equals its stream's last sequence,
// and returns the checkpoints.
func waitCaughtUp(t *testing.T, ctx context.Context, serve *background, js jetstream.JetStream, pool *pgxpool.Pool,
	ps []projections.Projection) map[string]uint64 {
	t.Helper()
	var cps map[string]uint64
	serve.waitWithin(t, 60*time.Second, "every projection's checkpoint at its stream's end", func() (bool, string) {
		seqs := lastSeqs(t, js, ps)
		var err error
		if cps, err = checkpoints(ctx, pool, ps); err != nil {
			return false, err.Error()
		}
		for _, p := range ps {
			if cps[p.Name()] != seqs[p.Stream()] {
				return false, fmt.Sprintf("checkpoints %v, streams %v", cps, seqs)
			}
		}
		return true, ""
	})
	return cps
}

// tableRows returns every row of a projection's table (named as the projection) as JSON, in
// the order of that text: the rows as a sorted set.
func tableRows(ctx context.Context, pool *pgxpool.Pool, table string) ([]string, error) {
	rows, err := pool.Query(ctx, "SELECT to_jsonb(t)::text AS row FROM "+pgx.Identifier{table}.Sanitize()+" t ORDER BY row")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// assertSameRows fails with the first rows that differ, rather than with two tables in full.
func assertSameRows(t *testing.T, table string, live, rebuilt []string) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range live {
		seen[r]++
	}
	for _, r := range rebuilt {
		seen[r]--
	}
	var diff []string
	for r, n := range seen {
		switch {
		case n > 0 && len(diff) < 5:
			diff = append(diff, "only live:    "+r)
		case n < 0 && len(diff) < 5:
			diff = append(diff, "only rebuilt: "+r)
		}
	}
	assert.Equal(t, len(live), len(rebuilt), "%s: rows, live and rebuilt", table)
	assert.Empty(t, diff, "%s: rows that differ between the live table and the rebuild", table)
}
