package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// detailStack is an engine and two APIs on it: projected answers GET /v1/executions/{id}
// with a database, streamed without one; the projections that the answer reads run until
// stopProjections.
type detailStack struct {
	js                  jetstream.JetStream
	projected, streamed *httptest.Server
	pool                *pgxpool.Pool
	stopProjections     func()
}

func newDetailStack(t *testing.T, svc *httptest.Server, withProjections bool) *detailStack {
	t.Helper()
	js, reg, eng := startEngine(t, svc, dispatcher.Config{})
	s := &detailStack{js: js, pool: pgtest.New(t), stopProjections: func() {}}
	if withProjections {
		s.stopProjections = runProjections(t, projections.Config{Pool: s.pool, JS: js, Log: testLogger(t), BatchWait: time.Millisecond},
			projections.NewExecutions(nil), projections.NewQueued(nil), projections.NewSteps(nil))
	}
	for _, v := range []api.Views{views.New(s.pool), nil} {
		srv := serveAPI(t, api.Config{Registry: reg, Engine: eng, Views: v, JetStream: js, Logger: testLogger(t)})
		if v != nil {
			s.projected = srv
		} else {
			s.streamed = srv
		}
	}
	return s
}

// startW puts workflow w, one call of svc's /x, and starts an execution of it on the projected
// API; it returns the execution's id.
func (s *detailStack) startW(t *testing.T) string { return startW(t, s.projected) }

// startW puts workflow w, one call of svc's /x, on the API at srv and starts an execution of
// it; it returns the execution's id.
func startW(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	r := do(t, srv, "PUT", "/v1/workflows/w", "id: w\nsteps: [{id: call, type: api_call, service: svc, endpoint: /x}]\n")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	r = do(t, srv, "POST", "/v1/executions", `{"workflow_id": "w"}`)
	require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
	return r.Body["execution_id"].(string)
}

// getExecution GETs an execution and returns the status, the Memmie-Source header and the
// body.
func getExecution(t *testing.T, srv *httptest.Server, id string) (int, string, map[string]any) {
	t.Helper()
	return getJSON(t, srv, "/v1/executions/"+id, api.SourceHeader)
}

// getJSON GETs path and returns the status, the header named and the decoded body.
func getJSON(t *testing.T, srv *httptest.Server, path, header string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(b, &body), "%s", b)
	return resp.StatusCode, resp.Header.Get(header), body
}

// waitForExecution polls GET until the answer satisfies ok, and returns it.
func waitForExecution(t *testing.T, srv *httptest.Server, id, what string, ok func(source string, body map[string]any) bool) map[string]any {
	t.Helper()
	var (
		source string
		body   map[string]any
	)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st int
		st, source, body = getExecution(t, srv, id)
		if st == http.StatusOK && ok(source, body) {
			return body
		}
		require.True(t, time.Now().Before(deadline), "%s: not within 60s; last answered %d by %q: %v", what, st, source, body)
		time.Sleep(20 * time.Millisecond)
	}
}

// sameTime reports whether two RFC 3339 times are the same instant to the microsecond, which
// Postgres keeps.
func sameTime(t *testing.T, a, b any) {
	t.Helper()
	ta, err := time.Parse(time.RFC3339Nano, a.(string))
	require.NoError(t, err)
	tb, err := time.Parse(time.RFC3339Nano, b.(string))
	require.NoError(t, err)
	assert.Equal(t, ta.Truncate(time.Microsecond), tb.Truncate(time.Microsecond))
}

// Once the projections hold an execution, GET /v1/executions/{id} answers from them, with
// the fields of the stream's answer, the same values, and the projections' own
// (step_attempts, updated_at).
func TestGetExecutionFromTheProjections(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"n": 7}`))
	}))
	t.Cleanup(svc.Close)
	s := newDetailStack(t, svc, true)
	r := do(t, s.projected, "PUT", "/v1/workflows/two", `id: two
steps:
  - {id: call, type: api_call, service: svc, endpoint: /x, output_map: {n: $.n}}
  - {id: skipped, type: transform, condition: "$.steps.call.output.n == 0", input_map: {a: 1}}
  - {id: last, type: transform, input_map: {doubled: "$.steps.call.output.n"}}
output_map: {n: $.steps.last.output.doubled}
`)
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	r = do(t, s.projected, "POST", "/v1/executions", `{"workflow_id": "two", "input": {"k": "v"}, "priority": 3, "max_retries": 2}`)
	require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
	id := r.Body["execution_id"].(string)

	got := waitForExecution(t, s.projected, id, "answered from the projections, completed", func(source string, body map[string]any) bool {
		return source == api.SourceProjection && body["status"] == "completed"
	})
	st, source, want := getExecution(t, s.streamed, id)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, api.SourceStream, source)

	for _, k := range []string{"execution_id", "workflow_id", "workflow_revision", "status", "priority", "max_retries",
		"input", "run", "retry_count", "output"} {
		assert.Equal(t, want[k], got[k], k)
	}
	for _, k := range []string{"queued_at", "started_at", "ended_at"} {
		sameTime(t, want[k], got[k])
	}
	require.Len(t, got["steps"], 3)
	for i, ws := range want["steps"].([]any) {
		w, g := ws.(map[string]any), got["steps"].([]any)[i].(map[string]any)
		for _, k := range []string{"id", "status", "attempts", "run", "output"} {
			assert.Equal(t, w[k], g[k], "step %d %s", i, k)
		}
	}
	call := got["steps"].([]any)[0].(map[string]any)
	assert.Equal(t, "/x", call["request"].(map[string]any)["path"], "the request's summary")
	assert.Contains(t, call, "duration_ms")
	// What only the projections have.
	assert.Contains(t, got, "updated_at")
	attempts := got["step_attempts"].([]any)
	require.Len(t, attempts, 3)
	assert.Equal(t, map[string]any{"run": 1.0, "step_id": "call", "attempt": 1.0, "status": "succeeded"},
		pick(attempts[0].(map[string]any), "run", "step_id", "attempt", "status"))
}

// A completed execution whose output cannot apply to its blob (a test operation fails) shows
// why on GET /v1/executions/{id}, the same from the projections as from the stream.
func TestRejectedOutputShowsFromBothSources(t *testing.T) {
	s := newDetailStack(t, nil, true)
	// In order: the provider names the workflow.
	for _, d := range []struct{ path, def string }{
		{"/v1/workflows/guarded", `id: guarded
steps:
  - id: write
    type: transform
    input_map:
      delta_operations:
        - {op: add, path: /metadata/a, value: 1}
        - {op: test, path: /metadata/type, value: other}
output_map:
  delta_operations: $.steps.write.output.delta_operations
`},
		{"/v1/providers/guard", `provider:
  id: guard
workflows:
  - workflow_id: guarded
    triggers:
      - event: onCreate
`},
	} {
		r := do(t, s.projected, "PUT", d.path, d.def)
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
	}
	msg := nats.NewMsg("memmie.blobs.g1.created")
	msg.Data = []byte(`{"blob_id": "g1", "metadata": {"type": "note"}}`)
	msg.Header.Set(jetstream.MsgIDHeader, "g1-1")
	_, err := s.js.PublishMsg(testContext(t), msg)
	require.NoError(t, err)
	id := trigger.ExecutionID("g1", "g1-1", "guard", "guarded")

	rejected := func(source string) func(string, map[string]any) bool {
		return func(src string, body map[string]any) bool { return src == source && body["deltas_rejected"] != nil }
	}
	want := waitForExecution(t, s.streamed, id, "its deltas rejected, from the stream", rejected(api.SourceStream))
	got := waitForExecution(t, s.projected, id, "its deltas rejected, from the projections", rejected(api.SourceProjection))
	assert.Equal(t, "completed", got["status"])
	w := want["deltas_rejected"].(map[string]any)
	assert.Equal(t, "g1", w["blob_id"])
	assert.Equal(t, "delta_operations[1]", w["item"])
	assert.Contains(t, w["reason"], "test")
	assert.Equal(t, w, got["deltas_rejected"], "the same rejection, the same JSON")
}

func pick(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}

// An execution the projections have not seen, or not up to its last event, is answered from
// the stream: never a 404, never an older state than the stream's.
func TestGetExecutionFromTheStreamUntilTheProjectionsCatchUp(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusBadRequest)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(svc.Close)

	// One stack for the first two: the database is closed after the first.
	stack := newDetailStack(t, svc, false)
	t.Run("a database with no projection running", func(t *testing.T) {
		id := stack.startW(t)
		st, source, body := getExecution(t, stack.projected, id)
		require.Equal(t, http.StatusOK, st, "%v", body)
		assert.Equal(t, api.SourceStream, source)
		assert.Equal(t, id, body["execution_id"])
	})

	t.Run("the database unreachable", func(t *testing.T) {
		id := stack.startW(t)
		stack.pool.Close()
		st, source, body := getExecution(t, stack.projected, id)
		require.Equal(t, http.StatusOK, st, "%v", body)
		assert.Equal(t, api.SourceStream, source)
	})

	t.Run("the projections stopped behind the execution's last event", func(t *testing.T) {
		s := newDetailStack(t, svc, true)
		id := s.startW(t)
		waitForExecution(t, s.projected, id, "failed, from the projections", func(source string, body map[string]any) bool {
			return source == api.SourceProjection && body["status"] == "failed"
		})

		s.stopProjections()
		fail.Store(false)
		r := do(t, s.projected, "POST", "/v1/executions/"+id+"/retry", "")
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		// The rows still say failed. Until the orchestrator records the retry, so does the
		// stream, and the projections may answer; once it moves on, the stream answers.
		var answers []string
		body := waitForExecution(t, s.projected, id, "completed", func(source string, body map[string]any) bool {
			answers = append(answers, fmt.Sprint(source, " ", body["status"]))
			return body["status"] == "completed"
		})
		for _, a := range answers {
			if a != "projection failed" {
				require.Contains(t, a, api.SourceStream+" ", "the projections are behind: the stream answers (%v)", answers)
			}
		}
		assert.Equal(t, api.SourceStream+" completed", answers[len(answers)-1])
		assert.Equal(t, 2.0, body["run"])
		var status string
		require.NoError(t, s.pool.QueryRow(testContext(t), `SELECT status FROM executions WHERE execution_id = $1`, id).Scan(&status))
		assert.Equal(t, "failed", status, "the row is behind")
	})
}

func TestGetExecutionNotFound(t *testing.T) {
	svc := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(svc.Close)
	s := newDetailStack(t, svc, true)
	for _, id := range []string{uuid.NewString(), "not-a-uuid"} {
		st, _, body := getExecution(t, s.projected, id)
		assert.Equal(t, http.StatusNotFound, st, "%s: %v", id, body)
		assert.Equal(t, "not_found", body["error"].(map[string]any)["code"], id)
	}
}
