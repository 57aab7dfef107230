package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
)

// waitFor bounds every wait of these tests.
const waitFor = 20 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel}))
}

// harness is one memmie "process": a connection, a registry and an engine, on an embedded
// server that outlives it when restarted.
type harness struct {
	t        testing.TB
	srv      *natsserver.Server
	js       jetstream.JetStream
	nc       *nats.Conn
	reg      *registry.Registry
	eng      *engine.Engine
	services *services.Registry
	cfg      engine.Config
	// stopTimeout bounds a process's stop; work still running then is handed back.
	stopTimeout time.Duration
}

type option func(*engine.Config)

func withMaxRunning(n int) option { return func(c *engine.Config) { c.Dispatcher.MaxRunning = n } }

// newHarness starts a server and a process on it with the services.
func newHarness(t testing.TB, svcs map[string]string, opts ...option) *harness {
	t.Helper()
	srv, _, _ := natstest.Run(t)
	cfg := baseConfig(t, svcs)
	for _, o := range opts {
		o(&cfg)
	}
	h := &harness{t: t, srv: srv, services: cfg.Services, cfg: cfg, stopTimeout: 10 * time.Second}
	h.open()
	return h
}

// baseConfig is an engine's configuration with the services (name to base URL) and the
// test's logger.
func baseConfig(t testing.TB, svcs map[string]string) engine.Config {
	t.Helper()
	var list []services.Service
	for name, raw := range svcs {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		list = append(list, services.Service{Name: name, BaseURL: u})
	}
	reg, err := services.NewRegistry(list...)
	require.NoError(t, err)
	return engine.Config{Services: reg, Logger: testLogger(t)}
}

// open starts a process: a new connection, the registry, the engine.
func (h *harness) open() {
	t := h.t
	t.Helper()
	ctx := testContext(t)
	nc, err := nats.Connect(h.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{})))
	reg, err := registry.New(js, registry.Config{Logger: h.cfg.Logger})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	cfg := h.cfg
	cfg.Definitions = reg
	eng, err := engine.New(js, cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	h.nc, h.js, h.reg, h.eng = nc, js, reg, eng
	t.Cleanup(h.close)
}

// close stops the process (not the server). It is safe to call twice.
func (h *harness) close() {
	if h.eng == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.stopTimeout)
	defer cancel()
	if err := h.eng.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		h.t.Errorf("close engine: %v", err)
	}
	require.NoError(h.t, h.reg.Stop(context.Background()))
	h.nc.Close()
	h.eng, h.reg, h.nc, h.js = nil, nil, nil, nil
}

// restart stops the process and the server, starts the server again on the same store, and a
// new process on it. It returns when the process had stopped.
func (h *harness) restart() (stopped time.Time) {
	h.t.Helper()
	h.close()
	stopped = time.Now()
	h.srv = natstest.Restart(h.t, h.srv)
	h.open()
	return stopped
}

func (h *harness) register(src ...string) {
	h.t.Helper()
	var defs []definitions.Definition
	for i, s := range src {
		def, err := definitions.Parse("test"+string(rune('a'+i))+".yaml", []byte(s), "")
		require.NoError(h.t, err)
		defs = append(defs, def)
	}
	_, err := h.reg.Register(testContext(h.t), defs...)
	require.NoError(h.t, err)
}

func (h *harness) start(workflowID string, input any) string {
	h.t.Helper()
	b, err := json.Marshal(input)
	require.NoError(h.t, err)
	id, created, err := h.eng.Start(testContext(h.t), engine.StartRequest{WorkflowID: workflowID, Input: b})
	require.NoError(h.t, err)
	require.True(h.t, created)
	return id
}

// wait polls the execution until cond holds.
func (h *harness) wait(id string, what string, cond func(*execution.State) bool) *execution.State {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	var last *execution.State
	for time.Now().Before(deadline) {
		s, err := h.eng.Execution(testContext(h.t), id)
		if err == nil {
			last = s
			if cond(s) {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	h.t.Fatalf("execution %s: not %s within %s; last state:\n%s", id, what, waitFor, b)
	return nil
}

func (h *harness) waitStatus(id string, want execution.Status) *execution.State {
	h.t.Helper()
	return h.wait(id, string(want), func(s *execution.State) bool { return s.Status == want })
}

// waitEnd waits for a terminal status.
func (h *harness) waitEnd(id string) *execution.State {
	h.t.Helper()
	return h.wait(id, "ended", func(s *execution.State) bool { return s.Status.Terminal() })
}

// types returns the event types of an execution's history.
func (h *harness) types(id string) []events.Type {
	h.t.Helper()
	history, err := h.eng.History(testContext(h.t), id)
	require.NoError(h.t, err)
	out := make([]events.Type, len(history))
	for i, ev := range history {
		out[i] = ev.Type
	}
	return out
}

// call is one request a test service received.
type call struct {
	Method  string
	Path    string
	Body    any
	Headers map[string]string
	// ctx is the request's context: a handler that hangs waits for it.
	ctx context.Context
}

// memmieHeaders are the request headers the tests assert.
var memmieHeaders = []string{"Content-Type", "Idempotency-Key", "X-Memmie-Execution-Id", "X-Memmie-Step-Id", "X-Memmie-Attempt",
	"Traceparent"}

// service is an httptest service that records its calls and answers with handle.
type service struct {
	*httptest.Server
	mu    sync.Mutex
	calls []call
	times []time.Time
	// counts holds how many calls each "METHOD path" got, so that a call's n costs the same
	// however many came before it.
	counts map[string]int
	handle func(c call, n int) (status int, body any)
}

// newService starts a service; handle gets each call and how many calls of its path came
// before it.
func newService(t testing.TB, handle func(c call, n int) (int, any)) *service {
	s := &service{handle: handle, counts: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *service) serve(w http.ResponseWriter, r *http.Request) {
	c := call{Method: r.Method, Path: r.URL.RequestURI(), Headers: map[string]string{}, ctx: r.Context()}
	b, _ := io.ReadAll(r.Body)
	if len(b) > 0 {
		_ = json.Unmarshal(b, &c.Body)
	}
	for _, k := range memmieHeaders {
		if v := r.Header.Get(k); v != "" {
			c.Headers[k] = v
		}
	}
	key := c.Method + " " + c.Path
	s.mu.Lock()
	n := s.counts[key]
	s.counts[key] = n + 1
	s.calls = append(s.calls, c)
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	status, body := s.handle(c, n)
	if status == 0 {
		return // the handler hung up (it waited for the request's end)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *service) Calls() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]call(nil), s.calls...)
	for i := range out {
		out[i].ctx = nil
	}
	return out
}

// callTimes returns when each call arrived.
func (s *service) callTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

// routes answers each path with its own function, given how many calls of the path came
// before; an unknown path gets 404.
func routes(m map[string]func(c call, n int) (int, any)) func(c call, n int) (int, any) {
	return func(c call, n int) (int, any) {
		if f, ok := m[c.Path]; ok {
			return f(c, n)
		}
		return 404, map[string]any{"error": "no route " + c.Path}
	}
}

// reply answers every call the same.
func reply(status int, body any) func(call, int) (int, any) {
	return func(call, int) (int, any) { return status, body }
}

// waitCalls waits until the service got n calls.
func (s *service) waitCalls(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if len(s.Calls()) >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("service got %d calls within %s, want %d: %v", len(s.Calls()), waitFor, n, s.paths())
}

// paths returns "METHOD path" of every call, in order.
func (s *service) paths() []string {
	var out []string
	for _, c := range s.Calls() {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

// jsonValue decodes JSON as the tests compare it (numbers as float64).
func jsonValue(t testing.TB, src string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(src), &v))
	return v
}

// testLogLevel is Info; MEMMIE_TEST_DEBUG=1 makes it Debug.
var testLogLevel = func() slog.Level {
	if os.Getenv("MEMMIE_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}()
