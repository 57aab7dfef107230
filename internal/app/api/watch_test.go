package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
)

// gate is a service whose calls answer once it is opened.
type gate struct {
	*httptest.Server
	open chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.open:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.Open) // before Close: the engine's calls end
	return g
}

func (g *gate) Open() { g.once.Do(func() { close(g.open) }) }

// followStack is the engine and an API with its JetStream context, cfg's other fields as given.
type followStack struct {
	js  jetstream.JetStream
	srv *httptest.Server
}

func newFollowStack(t *testing.T, svc *httptest.Server, cfg api.Config) *followStack {
	t.Helper()
	js, reg, eng := startEngine(t, svc, dispatcher.Config{})
	cfg.Registry, cfg.Engine, cfg.JetStream, cfg.Logger = reg, eng, js, testLogger(t)
	return &followStack{js: js, srv: serveAPI(t, cfg)}
}

// start registers workflow w, one call of svc, and starts an execution of it.
func (s *followStack) start(t *testing.T) string { return startW(t, s.srv) }

// getWait GETs path and returns the status, the Memmie-Ended header and the decoded body.
func getWait(t *testing.T, srv *httptest.Server, path string) (int, string, map[string]any) {
	t.Helper()
	return getJSON(t, srv, path, api.EndedHeader)
}

// GET /v1/executions/{id}?wait= answers when the execution ends, or when the wait runs out,
// and says which in Memmie-Ended.
func TestWaitForAnExecution(t *testing.T) {
	g := newGate(t)
	s := newFollowStack(t, g.Server, api.Config{})
	id := s.start(t)

	st, ended, body := getWait(t, s.srv, "/v1/executions/"+id+"?wait=300ms")
	require.Equal(t, http.StatusOK, st, "%v", body)
	assert.Equal(t, "false", ended, "the wait ran out: %v", body)
	assert.Contains(t, []any{"queued", "running"}, body["status"])

	type result struct {
		st    int
		ended string
		body  map[string]any
	}
	done := make(chan result, 1)
	go func() {
		st, ended, body := getWait(t, s.srv, "/v1/executions/"+id+"?wait=30s")
		done <- result{st, ended, body}
	}()
	g.Open()
	r := <-done
	require.Equal(t, http.StatusOK, r.st, "%v", r.body)
	assert.Equal(t, "true", r.ended)
	assert.Equal(t, "completed", r.body["status"])
	assert.Equal(t, id, r.body["execution_id"])

	// Ended already: at once, with the same state.
	st, ended, body = getWait(t, s.srv, "/v1/executions/"+id+"?wait=30s")
	require.Equal(t, http.StatusOK, st)
	assert.Equal(t, "true", ended)
	assert.Equal(t, r.body, body)

	for path, code := range map[string]int{
		"/v1/executions/" + id + "?wait=soon":                         http.StatusBadRequest,
		"/v1/executions/" + id + "?wait=-1s":                          http.StatusBadRequest,
		"/v1/executions/0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d?wait=1s": http.StatusNotFound,
		"/v1/executions/0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d/watch":   http.StatusNotFound,
	} {
		st, _, body := getWait(t, s.srv, path)
		assert.Equal(t, code, st, "%s: %v", path, body)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event string
	data      map[string]any
}

// readEvent reads the next event of an SSE stream, skipping comments; io.EOF at its end.
func readEvent(t *testing.T, rd *bufio.Reader) (sseEvent, error) {
	t.Helper()
	var ev sseEvent
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.event != "":
			return ev, nil
		case strings.HasPrefix(line, ":"), line == "":
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data), line)
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

// watch opens GET /v1/executions/{id}/watch until ctx ends.
func watch(t *testing.T, ctx context.Context, srv *httptest.Server, id string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/executions/"+id+"/watch", nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// GET /v1/executions/{id}/watch sends the state, one event per change, and the final state;
// then the stream ends.
func TestWatchAnExecution(t *testing.T) {
	g := newGate(t)
	s := newFollowStack(t, g.Server, api.Config{Heartbeat: 50 * time.Millisecond})
	id := s.start(t)

	resp := watch(t, testContext(t), s.srv, id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	rd := bufio.NewReader(resp.Body)
	var (
		evs      []sseEvent
		statuses []any
	)
	for {
		ev, err := readEvent(t, rd)
		require.NoError(t, err, "events so far: %v", statuses)
		evs, statuses = append(evs, ev), append(statuses, ev.data["status"])
		assert.Equal(t, id, ev.data["execution_id"])
		if ev.data["status"] == "running" {
			g.Open()
		}
		if ev.event == "end" {
			break
		}
		require.Equal(t, "state", ev.event)
	}
	require.Greater(t, len(evs), 1, "the state, then the end: %v", statuses)
	assert.Equal(t, "completed", statuses[len(statuses)-1])
	for i := 1; i < len(evs); i++ {
		prev, err := strconv.ParseUint(evs[i-1].id, 10, 64)
		require.NoError(t, err)
		next, err := strconv.ParseUint(evs[i].id, 10, 64)
		require.NoError(t, err)
		assert.Greater(t, next, prev, "one event per change, at its sequence")
	}
	_, err := readEvent(t, rd)
	assert.ErrorIs(t, err, io.EOF, "the stream ends with the final state")

	// An ended execution: its final state at once.
	resp = watch(t, testContext(t), s.srv, id)
	ev, err := readEvent(t, bufio.NewReader(resp.Body))
	require.NoError(t, err)
	assert.Equal(t, "end", ev.event)
	assert.Equal(t, "completed", ev.data["status"])
}

// executionConsumers counts the consumers of the executions stream.
func executionConsumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	st, err := js.Stream(testContext(t), streams.Executions)
	require.NoError(t, err)
	info, err := st.Info(testContext(t))
	require.NoError(t, err)
	return info.State.Consumers
}

// A watch takes a watcher slot and one consumer while it lasts; past Config.MaxWatchers a
// watch or a wait is answered 503; a client gone frees both.
func TestWatchersAreBoundedAndFreedWhenTheClientGoes(t *testing.T) {
	g := newGate(t)
	s := newFollowStack(t, g.Server, api.Config{MaxWatchers: 1})
	defer g.Open() // before the engine closes: its call ends
	id := s.start(t)
	before := executionConsumers(t, s.js)

	ctx, cancel := context.WithCancel(testContext(t))
	resp := watch(t, ctx, s.srv, id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err := readEvent(t, bufio.NewReader(resp.Body))
	require.NoError(t, err)
	assert.Equal(t, before+1, executionConsumers(t, s.js), "the watch follows with one consumer")

	for _, path := range []string{"/v1/executions/" + id + "/watch", "/v1/executions/" + id + "?wait=1s"} {
		r := do(t, s.srv, "GET", path, "")
		assert.Equal(t, http.StatusServiceUnavailable, r.Status, r.Raw)
		assert.Equal(t, "unavailable", r.errorCode())
		assert.Contains(t, r.Body["error"].(map[string]any)["message"], "MaxWatchers", r.Raw)
	}
	assert.Equal(t, http.StatusOK, do(t, s.srv, "GET", "/v1/executions/"+id, "").Status, "a GET without wait is no watcher")

	cancel()
	require.Eventually(t, func() bool { return executionConsumers(t, s.js) == before }, 20*time.Second, 20*time.Millisecond,
		"the consumer is deleted when the client goes")
	require.Eventually(t, func() bool {
		st, _, _ := getWait(t, s.srv, "/v1/executions/"+id+"?wait=1ms")
		return st == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "the slot is free again")
}

func TestFollowingNeedsJetStreamAndTheToken(t *testing.T) {
	js, reg, eng := startEngine(t, nil, dispatcher.Config{})
	without := serveAPI(t, api.Config{Registry: reg, Engine: eng, Logger: testLogger(t)})
	for _, path := range []string{"/v1/executions/x/watch", "/v1/executions/x?wait=1s"} {
		r := do(t, without, "GET", path, "")
		assert.Equal(t, http.StatusNotImplemented, r.Status, r.Raw)
		assert.Equal(t, "not_following", r.errorCode())
		assert.Contains(t, r.Body["error"].(map[string]any)["message"], "JetStream", r.Raw)
	}
	with := serveAPI(t, api.Config{Registry: reg, Engine: eng, JetStream: js, Token: "t0ken", Logger: testLogger(t)})
	for _, path := range []string{"/v1/executions/x/watch", "/v1/executions/x?wait=1s"} {
		st, _, _ := get(t, with, path, "")
		assert.Equal(t, http.StatusUnauthorized, st, path)
		st, _, body := get(t, with, path, "Bearer t0ken")
		assert.Equal(t, http.StatusNotFound, st, "%s: %s", path, body)
	}
}

// firstSeq returns the stream sequence of an execution's first message.
func firstSeq(t *testing.T, js jetstream.JetStream, id string) uint64 {
	t.Helper()
	st, err := js.Stream(testContext(t), streams.Executions)
	require.NoError(t, err)
	m, err := st.GetMsg(testContext(t), 1, jetstream.WithGetMsgSubject(events.ExecutionFilter(id)))
	require.NoError(t, err)
	return m.Sequence
}

// A GET of an execution whose last sequence has not moved answers the state it folded
// already, and one whose sequence moved reads only the messages after it: shown by deleting
// the execution's first message, without which its history cannot be folded again.
func TestReadsFoldOnlyWhatIsNew(t *testing.T) {
	g := newGate(t)
	s := newFollowStack(t, g.Server, api.Config{})
	id := s.start(t)
	running := waitState(t, s.srv, id, "running", status("running"))

	st, err := s.js.Stream(testContext(t), streams.Executions)
	require.NoError(t, err)
	require.NoError(t, st.DeleteMsg(testContext(t), firstSeq(t, s.js, id)))

	r := do(t, s.srv, "GET", "/v1/executions/"+id, "")
	require.Equal(t, http.StatusOK, r.Status, "the history was not loaded again: %s", r.Raw)
	assert.Equal(t, running, r.Body)

	g.Open()
	completed := waitState(t, s.srv, id, "completed", status("completed"))
	assert.Equal(t, running["queued_at"], completed["queued_at"], "the tail applied to the state folded before")
}

// A wait and a watch outlast the server's read and write timeouts, which cut every other
// request short.
func TestFollowingOutlastsTheServerTimeouts(t *testing.T) {
	g := newGate(t)
	js, reg, eng := startEngine(t, g.Server, dispatcher.Config{})
	defer g.Open()
	h, err := api.New(api.Config{Registry: reg, Engine: eng, JetStream: js, Logger: testLogger(t), Heartbeat: 100 * time.Millisecond})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = api.NewServer(h, api.ServerConfig{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	srv.Start()
	t.Cleanup(srv.Close)
	s := &followStack{js: js, srv: srv}
	id := s.start(t)

	st, ended, body := getWait(t, srv, "/v1/executions/"+id+"?wait=1500ms")
	require.Equal(t, http.StatusOK, st, "%v", body)
	assert.Equal(t, "false", ended)

	resp := watch(t, testContext(t), srv, id)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rd := bufio.NewReader(resp.Body)
	// Ten heartbeats: a second, past both timeouts.
	for beats := 0; beats < 10; {
		line, err := rd.ReadString('\n')
		require.NoError(t, err, "after %d heartbeats", beats)
		if strings.HasPrefix(line, ": keep-alive") {
			beats++
		}
	}
	g.Open()
	for {
		ev, err := readEvent(t, rd)
		require.NoError(t, err)
		if ev.event == "end" {
			assert.Equal(t, "completed", ev.data["status"])
			return
		}
	}
}
