package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/logbuf"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// cannedEngine answers every call with err, and records the start requests. It tests the
// API's request validation and error mapping; the end-to-end tests below use the real engine.
type cannedEngine struct {
	err    error
	mu     sync.Mutex
	starts []engine.StartRequest
}

func (c *cannedEngine) Start(_ context.Context, req engine.StartRequest) (string, bool, error) {
	c.mu.Lock()
	c.starts = append(c.starts, req)
	c.mu.Unlock()
	if c.err != nil {
		return "", false, c.err
	}
	return "e1", true, nil
}

func (c *cannedEngine) Execution(context.Context, string) (*execution.State, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &execution.State{ExecutionID: "e1", Status: execution.StatusRunning}, nil
}

func (c *cannedEngine) ExecutionSeq(context.Context, string) (uint64, error) { return 0, c.err }
func (c *cannedEngine) HistoryPage(context.Context, string, uint64, int) (engine.HistoryPage, error) {
	return engine.HistoryPage{}, c.err
}
func (c *cannedEngine) Cancel(context.Context, string, string) error { return c.err }
func (c *cannedEngine) Retry(context.Context, string) error          { return c.err }
func (c *cannedEngine) Ready(context.Context) error                  { return c.err }

func TestExecutionRequestValidation(t *testing.T) {
	eng := &cannedEngine{}
	srv, _ := newServer(t, eng)

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"no body", "POST", "/v1/executions", "", 400, "bad_request"},
		{"not JSON", "POST", "/v1/executions", "{", 400, "bad_request"},
		{"trailing data", "POST", "/v1/executions", `{"workflow_id": "w"} {}`, 400, "bad_request"},
		{"unknown field", "POST", "/v1/executions", `{"workflow_id": "w", "prio": 1}`, 400, "bad_request"},
		{"no workflow", "POST", "/v1/executions", `{"input": {}}`, 400, "bad_request"},
		{"priority above 100", "POST", "/v1/executions", `{"workflow_id": "w", "priority": 101}`, 400, "bad_request"},
		{"negative priority", "POST", "/v1/executions", `{"workflow_id": "w", "priority": -1}`, 400, "bad_request"},
		{"fractional priority", "POST", "/v1/executions", `{"workflow_id": "w", "priority": 1.5}`, 400, "bad_request"},
		{"negative max_retries", "POST", "/v1/executions", `{"workflow_id": "w", "max_retries": -1}`, 400, "bad_request"},
		{"long key", "POST", "/v1/executions", `{"workflow_id": "w", "idempotency_key": "` + strings.Repeat("k", 300) + `"}`, 400, "bad_request"},
		{"too large", "POST", "/v1/executions", `{"workflow_id": "w", "input": "` + strings.Repeat("x", 70<<10) + `"}`, 413, "too_large"},
		{"long reason", "POST", "/v1/executions/e1/cancel", `{"reason": "` + strings.Repeat("r", 2000) + `"}`, 400, "bad_request"},
		{"retry takes no fields", "POST", "/v1/executions/e1/retry", `{"x": 1}`, 400, "bad_request"},
		{"wrong method", "DELETE", "/v1/executions/e1", "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, tt.method, tt.path, tt.body)
			assert.Equal(t, tt.status, r.Status, r.Raw)
			assert.Equal(t, tt.code, r.errorCode(), r.Raw)
		})
	}
	assert.Empty(t, eng.starts, "no invalid request reached the engine")

	r := do(t, srv, "POST", "/v1/executions",
		`{"workflow_id": "w", "input": {"a": [1, 2]}, "priority": 100, "idempotency_key": "k", "max_retries": 2}`)
	require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
	assert.Equal(t, map[string]any{"execution_id": "e1", "created": true}, r.Body)
	require.Len(t, eng.starts, 1)
	assert.Equal(t, engine.StartRequest{WorkflowID: "w", Input: json.RawMessage(`{"a": [1, 2]}`), Priority: 100,
		IdempotencyKey: "k", MaxRetries: 2}, eng.starts[0])

	for _, path := range []string{"/v1/executions/e1/cancel", "/v1/executions/e1/retry"} {
		r := do(t, srv, "POST", path, "")
		assert.Equal(t, http.StatusAccepted, r.Status, r.Raw)
	}
}

func TestEngineErrorsMapToStatuses(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("%w: x", engine.ErrNotFound), 404, "not_found"},
		{fmt.Errorf("%w: w", engine.ErrWorkflowNotFound), 404, "workflow_not_found"},
		{fmt.Errorf("%w: w", engine.ErrWorkflowInactive), 409, "workflow_inactive"},
		{fmt.Errorf("%w: ended", engine.ErrState), 409, "invalid_state"},
		{fmt.Errorf("%w: input", engine.ErrInvalid), 400, "bad_request"},
		{&engine.IdempotencyConflictError{ExecutionID: "e1", Fields: []string{"input"}}, 409, "idempotency_conflict"},
		{&engine.InputError{WorkflowID: "w", SchemaID: "s", Problems: []string{"/a: missing"}}, 422, "invalid_input"},
		{errors.New("nats: timeout"), 500, "internal"},
	}
	requests := []struct{ method, path, body string }{
		{"POST", "/v1/executions", `{"workflow_id": "w"}`},
		{"GET", "/v1/executions/e1", ""},
		{"GET", "/v1/executions/e1/events", ""},
		{"POST", "/v1/executions/e1/cancel", `{"reason": "r"}`},
		{"POST", "/v1/executions/e1/retry", ""},
	}
	eng := &cannedEngine{}
	srv, _ := newServer(t, eng)
	for _, tt := range tests {
		eng.err = tt.err
		for _, req := range requests {
			t.Run(fmt.Sprintf("%s %s %v", req.method, req.path, tt.err), func(t *testing.T) {
				r := do(t, srv, req.method, req.path, req.body)
				assert.Equal(t, tt.status, r.Status, r.Raw)
				assert.Equal(t, tt.code, r.errorCode(), r.Raw)
				if tt.status == http.StatusInternalServerError {
					assert.NotContains(t, r.Raw, tt.err.Error(), "an internal error stays in the log")
					assert.Regexp(t, `^internal error \(request id [0-9a-f-]{36}\)$`, r.Body["error"].(map[string]any)["message"])
					return
				}
				assert.Equal(t, tt.err.Error(), r.Body["error"].(map[string]any)["message"])
			})
		}
	}
	eng.err = errors.New("handlers are not running")
	r := do(t, srv, "GET", "/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, r.Status)
	assert.Contains(t, r.Raw, "handlers are not running")
}

// A 500 answers with a request id, not with the error, which goes to the log under that id.
func TestInternalErrorIsLoggedNotEchoed(t *testing.T) {
	_, _, js := natstest.Run(t)
	reg := startRegistry(t, js)
	var logs logbuf.Buffer
	secret := "nats: timeout on $JS.API.STREAM.MSG.GET.MEMMIE_EXECUTIONS at nats://10.0.0.7:4222"
	h, err := api.New(api.Config{Registry: reg, Engine: &cannedEngine{err: errors.New(secret)},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, srv.URL+"/v1/executions/e1", nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	id := resp.Header.Get("X-Request-Id")
	require.NotEmpty(t, id)
	assert.Equal(t, "internal", body.Error.Code)
	assert.Equal(t, "internal error (request id "+id+")", body.Error.Message)
	assert.NotContains(t, body.Error.Message, "nats")

	var logged map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(logs.String())), &logged), logs.String())
	assert.Equal(t, id, logged["request_id"])
	assert.Equal(t, secret, logged["err"])
	assert.Equal(t, "/v1/executions/e1", logged["path"])
}

// stack is one memmie process: the registry, the real engine and the API, on an embedded
// server, with a test service named svc.
func newStack(t *testing.T, svc *httptest.Server) *httptest.Server {
	t.Helper()
	js, reg, eng := startEngine(t, svc, dispatcher.Config{})
	return serveAPI(t, api.Config{Registry: reg, Engine: eng, JetStream: js, Logger: testLogger(t), MaxBodyBytes: 64 << 10})
}

// waitState polls GET /v1/executions/{id} until cond holds.
func waitState(t *testing.T, srv *httptest.Server, id, what string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last response
	for time.Now().Before(deadline) {
		last = do(t, srv, "GET", "/v1/executions/"+id, "")
		if last.Status == http.StatusOK && cond(last.Body) {
			return last.Body
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("execution %s not %s within 20s: %s", id, what, last.Raw)
	return nil
}

func status(want string) func(map[string]any) bool {
	return func(s map[string]any) bool { return s["status"] == want }
}

func TestExecutionsEndToEnd(t *testing.T) {
	release := make(chan struct{})
	var flaky sync.Mutex
	flakyCalls := 0
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/flaky":
			flaky.Lock()
			flakyCalls++
			n := flakyCalls
			flaky.Unlock()
			if n == 1 {
				w.WriteHeader(http.StatusConflict)
				_, _ = w.Write([]byte(`{"error": "not yet"}`))
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(svc.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	srv := newStack(t, svc)
	putExamples(t, srv)
	for id, body := range map[string]string{
		"slow":  "id: slow\nsteps: [{id: wait, type: api_call, service: svc, endpoint: /slow}]\n",
		"flaky": "id: flaky\nsteps: [{id: call, type: api_call, service: svc, endpoint: /flaky}]\n",
	} {
		r := do(t, srv, "PUT", "/v1/workflows/"+id, body)
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
	}

	input := `{"blob_id": "0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d", "user_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
		"blob": {"content": "# One", "metadata": {"type": "chapter"}}}`

	t.Run("start, idempotency, state and events", func(t *testing.T) {
		body := `{"workflow_id": "blob_summary", "input": ` + input + `, "priority": 7, "idempotency_key": "once"}`
		r := do(t, srv, "POST", "/v1/executions", body)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		assert.Equal(t, true, r.Body["created"])
		id := r.Body["execution_id"].(string)
		require.NotEmpty(t, id)

		again := do(t, srv, "POST", "/v1/executions", body)
		require.Equal(t, http.StatusAccepted, again.Status, again.Raw)
		assert.Equal(t, map[string]any{"execution_id": id, "created": false}, again.Body, "the same key gives the same execution")

		s := waitState(t, srv, id, "completed", status("completed"))
		assert.Equal(t, "blob_summary", s["workflow_id"])
		assert.Equal(t, 7.0, s["priority"])
		ops := s["output"].(map[string]any)["delta_operations"].([]any)
		require.Len(t, ops, 2)
		assert.Equal(t, "chapter blob 0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d of user 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
			ops[0].(map[string]any)["value"])

		ev := do(t, srv, "GET", "/v1/executions/"+id+"/events", "")
		require.Equal(t, http.StatusOK, ev.Status, ev.Raw)
		list := ev.Body["events"].([]any)
		require.NotEmpty(t, list)
		first, last := list[0].(map[string]any), list[len(list)-1].(map[string]any)
		assert.Equal(t, string(events.TypeExecutionQueued), first["type"])
		assert.Equal(t, "1.0", first["specversion"])
		assert.Equal(t, string(events.TypeExecutionCompleted), last["type"])

		assert.Nil(t, ev.Body["next"], "one page holds it all")

		// Pages of 2 follow each other to the same events.
		var paged []any
		after, pages := "", 0
		for {
			path := "/v1/executions/" + id + "/events?limit=2"
			if after != "" {
				path += "&after=" + after
			}
			r := do(t, srv, "GET", path, "")
			require.Equal(t, http.StatusOK, r.Status, r.Raw)
			page := r.Body["events"].([]any)
			require.LessOrEqual(t, len(page), 2)
			paged = append(paged, page...)
			pages++
			next, ok := r.Body["next"].(string)
			if !ok {
				break
			}
			require.Len(t, page, 2, "a page with a next is full")
			after = next
		}
		assert.Equal(t, list, paged)
		assert.Equal(t, (len(list)+1)/2, pages)
		r = do(t, srv, "GET", "/v1/executions/"+id+"/events?limit=1000&after="+after, "")
		assert.Equal(t, http.StatusOK, r.Status, r.Raw)
		for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "after=-1", "after=x"} {
			r := do(t, srv, "GET", "/v1/executions/"+id+"/events?"+bad, "")
			assert.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", bad, r.Raw)
		}

		for _, action := range []string{"cancel", "retry"} {
			r := do(t, srv, "POST", "/v1/executions/"+id+"/"+action, "")
			assert.Equal(t, http.StatusConflict, r.Status, r.Raw)
			assert.Equal(t, "invalid_state", r.errorCode(), "%s of a completed execution", action)
		}
	})

	t.Run("the same key with other parameters is a conflict", func(t *testing.T) {
		body := `{"workflow_id": "blob_summary", "input": ` + input + `, "priority": 7, "max_retries": 1, "idempotency_key": "twice"}`
		r := do(t, srv, "POST", "/v1/executions", body)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		id := r.Body["execution_id"].(string)

		// The same parameters, written otherwise, are the same request.
		var compact bytes.Buffer
		require.NoError(t, json.Compact(&compact, []byte(input)))
		same := `{"idempotency_key": "twice", "max_retries": 1, "priority": 7, "input": ` + compact.String() + `, "workflow_id": "blob_summary"}`
		r = do(t, srv, "POST", "/v1/executions", same)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		assert.Equal(t, map[string]any{"execution_id": id, "created": false}, r.Body)

		for _, tt := range []struct{ body, differs string }{
			{`{"workflow_id": "blob_summary", "input": ` + input + `, "priority": 8, "max_retries": 1, "idempotency_key": "twice"}`, "priority"},
			{`{"workflow_id": "blob_summary", "input": ` + input + `, "priority": 7, "idempotency_key": "twice"}`, "max_retries"},
			{`{"workflow_id": "blob_summary", "input": ` + strings.Replace(input, "# One", "# Two", 1) + `, "priority": 7, "max_retries": 1, "idempotency_key": "twice"}`, "input"},
			{`{"workflow_id": "flaky", "priority": 7, "max_retries": 1, "idempotency_key": "twice"}`, "workflow_id, input"},
		} {
			r := do(t, srv, "POST", "/v1/executions", tt.body)
			require.Equal(t, http.StatusConflict, r.Status, r.Raw)
			assert.Equal(t, "idempotency_conflict", r.errorCode())
			assert.Contains(t, r.Body["error"].(map[string]any)["message"], "started with another "+tt.differs)
		}
		waitState(t, srv, id, "completed", status("completed"))
	})

	t.Run("an input the schema refuses is 422 and starts nothing", func(t *testing.T) {
		r := do(t, srv, "POST", "/v1/executions", `{"workflow_id": "blob_summary", "input": {"blob_id": "not-a-uuid"}, "idempotency_key": "bad-input"}`)
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, r.Raw)
		assert.Equal(t, "invalid_input", r.errorCode())
		probs := r.Body["error"].(map[string]any)["problems"].([]any)
		require.NotEmpty(t, probs, r.Raw)
		fields := map[string]bool{}
		for _, p := range probs {
			fields[p.(map[string]any)["field"].(string)] = true
		}
		assert.True(t, fields["/blob_id"], "the bad uuid is named: %s", r.Raw)
		assert.True(t, fields["/"], "the missing properties are named: %s", r.Raw)

		// Nothing on the execution's subjects.
		r = do(t, srv, "GET", "/v1/executions/"+engine.IDForKey("bad-input")+"/events", "")
		assert.Equal(t, http.StatusNotFound, r.Status, r.Raw)
	})

	t.Run("unknown, missing and inactive", func(t *testing.T) {
		r := do(t, srv, "POST", "/v1/executions", `{"workflow_id": "nope"}`)
		assert.Equal(t, http.StatusNotFound, r.Status, r.Raw)
		assert.Equal(t, "workflow_not_found", r.errorCode())

		for _, path := range []string{"/v1/executions/0190aaaa-0000-7000-8000-000000000000", "/v1/executions/0190aaaa-0000-7000-8000-000000000000/events"} {
			r = do(t, srv, "GET", path, "")
			assert.Equal(t, http.StatusNotFound, r.Status, r.Raw)
			assert.Equal(t, "not_found", r.errorCode())
		}

		require.Equal(t, http.StatusOK, do(t, srv, "DELETE", "/v1/workflows/flaky", "").Status)
		r = do(t, srv, "POST", "/v1/executions", `{"workflow_id": "flaky"}`)
		assert.Equal(t, http.StatusConflict, r.Status, r.Raw)
		assert.Equal(t, "workflow_inactive", r.errorCode())
		require.Equal(t, http.StatusOK, do(t, srv, "PUT", "/v1/workflows/flaky",
			"id: flaky\nsteps: [{id: call, type: api_call, service: svc, endpoint: /flaky}]\n").Status, "reactivated")
	})

	t.Run("retry a failed execution", func(t *testing.T) {
		r := do(t, srv, "POST", "/v1/executions", `{"workflow_id": "flaky"}`)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		id := r.Body["execution_id"].(string)
		waitState(t, srv, id, "failed", status("failed"))

		r = do(t, srv, "POST", "/v1/executions/"+id+"/retry", "")
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		assert.Equal(t, map[string]any{"execution_id": id, "requested": "retry"}, r.Body)
		s := waitState(t, srv, id, "completed in run 2", func(s map[string]any) bool { return s["run"] == 2.0 && s["status"] == "completed" })
		assert.Equal(t, map[string]any{"ok": true}, s["output"])
	})

	t.Run("cancel a running execution", func(t *testing.T) {
		r := do(t, srv, "POST", "/v1/executions", `{"workflow_id": "slow"}`)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		id := r.Body["execution_id"].(string)
		waitState(t, srv, id, "running", status("running"))

		r = do(t, srv, "POST", "/v1/executions/"+id+"/cancel", `{"reason": "not needed"}`)
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		waitState(t, srv, id, "cancel requested", func(s map[string]any) bool { return s["cancel_requested"] == true })
		close(release)
		s := waitState(t, srv, id, "cancelled", status("cancelled"))
		assert.Equal(t, "not needed", s["cancel_reason"])
	})

	r := do(t, srv, "GET", "/readyz", "")
	assert.Equal(t, http.StatusOK, r.Status, r.Raw)
}
