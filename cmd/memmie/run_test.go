package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/engine"
)

// slowService answers /slow once release is closed, /fail with 400 and anything else with
// {"ok": true}.
type slowService struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

func newSlowService(t *testing.T) *slowService {
	s := &slowService{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-s.release:
			case <-r.Context().Done():
			}
		case "/fail":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error": "no"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(s.Close)
	t.Cleanup(s.Release) // before Close: the engine's calls end
	return s
}

func (s *slowService) Release() { s.once.Do(func() { close(s.release) }) }

// newRunAPI starts the API with the examples and the slow and fail workflows registered.
func newRunAPI(t *testing.T) (*testAPI, *slowService) {
	t.Helper()
	svc := newSlowService(t)
	srv := newTestAPI(t, svc.URL)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "workflows", "slow.yaml"), "id: slow\nsteps: [{id: wait, type: api_call, service: svc, endpoint: /slow}]\n")
	writeFile(t, filepath.Join(dir, "workflows", "fail.yaml"), "id: fail\nsteps: [{id: call, type: api_call, service: svc, endpoint: /fail}]\n")
	code, out := execute(t, "apply", "--api-url", srv.URL, "../../definitions", dir)
	require.Equal(t, 0, code, out)
	return srv, svc
}

const blobInput = `{"blob_id": "0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d", "user_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
 "blob": {"content": "# One", "metadata": {"type": "chapter"}}}`

// executeSplit runs the CLI in-process with stdout and stderr apart.
func executeSplit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0, out.String(), errOut.String()
	}
	if ee, ok := err.(*exitError); ok {
		return ee.code, out.String(), errOut.String() + ee.msg
	}
	return 1, out.String(), errOut.String() + err.Error()
}

func decodeState(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &v), s)
	return v
}

func TestRun(t *testing.T) {
	srv, svc := newRunAPI(t)
	inputFile := filepath.Join(t.TempDir(), "input.json")
	writeFile(t, inputFile, blobInput)

	t.Run("prints the execution id", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "run", "blob_summary", "--api-url", srv.URL, "--input", blobInput, "--idempotency-key", "k1")
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, engine.IDForKey("k1")+"\n", out)
	})

	t.Run("--wait prints the final state; exit 0 when completed", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "run", "blob_summary", "--api-url", srv.URL, "--input", "@"+inputFile,
			"--priority", "50", "--wait", "--timeout", "20s")
		require.Equal(t, 0, code, errOut)
		s := decodeState(t, out)
		assert.Equal(t, "completed", s["status"])
		assert.Equal(t, 50.0, s["priority"])
		assert.Equal(t, s["execution_id"].(string)+"\n", errOut, "the id goes to stderr with --wait")
		assert.NotEmpty(t, s["output"])
	})

	t.Run("exit 1 when failed", func(t *testing.T) {
		code, out, _ := executeSplit(t, "run", "fail", "--api-url", srv.URL, "--wait")
		assert.Equal(t, 1, code)
		assert.Equal(t, "failed", decodeState(t, out)["status"])
	})

	t.Run("exit 3 when the timeout runs out", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "run", "slow", "--api-url", srv.URL, "--wait", "--timeout", "300ms")
		assert.Equal(t, 3, code, errOut)
		assert.Contains(t, errOut, "did not end within 300ms")
		assert.Contains(t, []any{"queued", "running"}, decodeState(t, out)["status"], "the last known state is printed")
	})

	t.Run("exit 2 when cancelled", func(t *testing.T) {
		type result struct {
			code     int
			out, err string
		}
		done := make(chan result, 1)
		go func() {
			code, out, errOut := executeSplit(t, "run", "slow", "--api-url", srv.URL, "--idempotency-key", "to-cancel", "--wait", "--timeout", "20s")
			done <- result{code, out, errOut}
		}()
		id := engine.IDForKey("to-cancel")
		waitFor(t, "running", func() bool {
			code, out, _ := executeSplit(t, "executions", "show", id, "--api-url", srv.URL)
			return code == 0 && decodeState(t, out)["status"] == "running"
		})
		code, out, errOut := executeSplit(t, "executions", "cancel", id, "--reason", "test", "--api-url", srv.URL)
		require.Equal(t, 0, code, errOut)
		assert.Equal(t, "cancel of "+id+" requested\n", out)
		svc.Release()

		select {
		case r := <-done:
			assert.Equal(t, 2, r.code, r.err)
			s := decodeState(t, r.out)
			assert.Equal(t, "cancelled", s["status"])
			assert.Equal(t, "test", s["cancel_reason"])
		case <-time.After(25 * time.Second):
			t.Fatal("run --wait did not return")
		}
	})

	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"input not JSON", []string{"blob_summary", "--input", "{"}, "not JSON"},
		{"input file missing", []string{"blob_summary", "--input", "@/nonexistent/x.json"}, "--input"},
		{"priority out of range", []string{"blob_summary", "--priority", "101"}, "--priority"},
		{"negative timeout", []string{"blob_summary", "--wait", "--timeout", "-1s"}, "--timeout"},
		{"unknown workflow", []string{"nope"}, "workflow_not_found"},
		{"no workflow id", []string{}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := executeSplit(t, append([]string{"run", "--api-url", srv.URL}, tt.args...)...)
			assert.Equal(t, 1, code)
			assert.Contains(t, errOut, tt.msg)
		})
	}
}

func TestReadInputFromStdin(t *testing.T) {
	got, err := readInput("@-", strings.NewReader(`{"a": 1}`))
	require.NoError(t, err)
	assert.JSONEq(t, `{"a": 1}`, string(got))
	got, err = readInput("", nil)
	require.NoError(t, err)
	assert.Nil(t, got)
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not %s within 20s", what)
}

// run --wait follows the execution with the API's long poll: one request while a step runs,
// where polling made one every 50 ms to 1 s (about eight in the two seconds held here).
func TestRunWaitDoesNotPoll(t *testing.T) {
	srv, svc := newRunAPI(t)
	done := runWaitInBackground(t, srv.URL)
	waitFor(t, "asked for the execution", func() bool { return srv.gets.Load() >= 1 })
	// The step is held for two seconds: the window in which a polling client asks again.
	select {
	case r := <-done:
		t.Fatalf("run --wait ended while the step ran: %d %s %s", r.code, r.out, r.err)
	case <-time.After(2 * time.Second):
	}
	svc.Release()
	select {
	case r := <-done:
		require.Equal(t, 0, r.code, r.err)
		assert.Equal(t, "completed", decodeState(t, r.out)["status"])
	case <-time.After(25 * time.Second):
		t.Fatal("run --wait did not return")
	}
	assert.LessOrEqual(t, srv.gets.Load(), int64(2), "GET /v1/executions/{id} requests of one run --wait")
}

// Against an API that does not follow executions (501 to ?wait), run --wait polls.
func TestRunWaitPollsAnAPIThatDoesNotWait(t *testing.T) {
	svc := newSlowService(t)
	srv := newTestAPIFollowing(t, svc.URL, false)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "workflows", "slow.yaml"), "id: slow\nsteps: [{id: wait, type: api_call, service: svc, endpoint: /slow}]\n")
	code, out := execute(t, "apply", "--api-url", srv.URL, dir)
	require.Equal(t, 0, code, out)
	done := runWaitInBackground(t, srv.URL)
	waitFor(t, "polled", func() bool { return srv.gets.Load() >= 3 })
	svc.Release()
	r := <-done
	require.Equal(t, 0, r.code, r.err)
	assert.Equal(t, "completed", decodeState(t, r.out)["status"])
}

// A wait whose connection drops is asked again; ten failures in a row end run --wait.
func TestRunWaitReattachesAfterADroppedConnection(t *testing.T) {
	srv, svc := newRunAPI(t)
	srv.dropWaits.Store(3)
	done := runWaitInBackground(t, srv.URL)
	waitFor(t, "attached after three drops", func() bool { return srv.gets.Load() >= 4 })
	svc.Release()
	r := <-done
	require.Equal(t, 0, r.code, r.err)
	assert.Equal(t, "completed", decodeState(t, r.out)["status"])

	srv.dropWaits.Store(100)
	code, _, errOut := executeSplit(t, "run", "blob_summary", "--api-url", srv.URL, "--input", blobInput, "--wait", "--timeout", "30s")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "10 failed requests in a row")
}

// runResult is what a command run by runWaitInBackground ended with.
type runResult struct {
	code     int
	out, err string
}

// runWaitInBackground runs `memmie run slow --wait` against the API at url, and sends its
// result once it ends.
func runWaitInBackground(t *testing.T, url string) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		code, out, errOut := executeSplit(t, "run", "slow", "--api-url", url, "--wait", "--timeout", "30s")
		done <- runResult{code, out, errOut}
	}()
	return done
}
