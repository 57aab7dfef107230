package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/projections"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newServer serves the API over a real registry on an embedded JetStream server, with eng as
// its engine (nil: none).
func newServer(t *testing.T, eng api.Engine) (*httptest.Server, *registry.Registry) {
	t.Helper()
	_, _, js := natstest.Run(t)
	return serve(t, js, eng)
}

func serve(t *testing.T, js jetstream.JetStream, eng api.Engine) (*httptest.Server, *registry.Registry) {
	t.Helper()
	reg := startRegistry(t, js)
	return serveWith(t, reg, eng), reg
}

// startRegistryOn starts a registry on a new embedded server.
func startRegistryOn(t *testing.T) *registry.Registry {
	t.Helper()
	_, _, js := natstest.Run(t)
	return startRegistry(t, js)
}

// startRegistry creates the streams and starts a registry on them.
func startRegistry(t *testing.T, js jetstream.JetStream) *registry.Registry {
	t.Helper()
	ctx := testContext(t)
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{Storage: jetstream.MemoryStorage})))
	reg, err := registry.New(js, registry.Config{Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	return reg
}

func serveWith(t *testing.T, reg *registry.Registry, eng api.Engine) *httptest.Server {
	t.Helper()
	return serveAPI(t, api.Config{Registry: reg, Engine: eng, Logger: testLogger(t), MaxBodyBytes: 64 << 10})
}

// serveAPI serves the API of cfg until the test ends.
func serveAPI(t *testing.T, cfg api.Config) *httptest.Server {
	t.Helper()
	h, err := api.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// startEngine starts, on a new embedded server, a registry and the real engine, with svc (when
// not nil) as the service named svc and d as the dispatcher's config; the engine closes when
// the test ends.
func startEngine(t *testing.T, svc *httptest.Server, d dispatcher.Config) (jetstream.JetStream, *registry.Registry, *engine.Engine) {
	t.Helper()
	return startEngineWith(t, svc, d, nil)
}

// startEngineWith is startEngine with the engine's config changed by with, when not nil.
func startEngineWith(t *testing.T, svc *httptest.Server, d dispatcher.Config, with func(*engine.Config)) (jetstream.JetStream,
	*registry.Registry, *engine.Engine) {
	t.Helper()
	_, _, js := natstest.Run(t)
	var list []services.Service
	if svc != nil {
		u, err := url.Parse(svc.URL)
		require.NoError(t, err)
		list = append(list, services.Service{Name: "svc", BaseURL: u})
	}
	svcs, err := services.NewRegistry(list...)
	require.NoError(t, err)
	reg := startRegistry(t, js)
	cfg := engine.Config{Definitions: reg, Services: svcs, Logger: testLogger(t),
		Streams: streams.Options{Storage: jetstream.MemoryStorage}, Dispatcher: d}
	if with != nil {
		with(&cfg)
	}
	eng, err := engine.New(js, cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Open(testContext(t)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, eng.Close(ctx))
	})
	return js, reg, eng
}

// runProjections runs a Runner of cfg for each of ps until stop, which the test's end calls
// too: register it after the pool's cleanup, as cleanups run in reverse.
func runProjections(t testing.TB, cfg projections.Config, ps ...projections.Projection) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var dones []chan struct{}
	stop = func() {
		cancel()
		for _, d := range dones {
			<-d
		}
	}
	t.Cleanup(stop)
	for _, p := range ps {
		r, err := projections.NewRunner(p, cfg)
		require.NoError(t, err)
		done := make(chan struct{})
		dones = append(dones, done)
		go func() { defer close(done); _ = r.Run(ctx) }()
	}
	return stop
}

// listedIDs returns the field of each row of a list's answer (its rows under list), in order.
func listedIDs(t *testing.T, r response, list, field string) []string {
	t.Helper()
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	rows, ok := r.Body[list].([]any)
	require.True(t, ok, r.Raw)
	out := make([]string, len(rows))
	for i, e := range rows {
		out[i] = e.(map[string]any)[field].(string)
	}
	return out
}

// assertNoDatabase asserts that r is the answer of a memmie without a database.
func assertNoDatabase(t *testing.T, r response) {
	t.Helper()
	assert.Equal(t, http.StatusServiceUnavailable, r.Status, r.Raw)
	assert.Equal(t, "unavailable", r.errorCode())
	msg := r.Body["error"].(map[string]any)["message"].(string)
	assert.True(t, strings.HasPrefix(msg, "no database configured"), msg)
}

// response is a decoded answer.
type response struct {
	Status int
	Body   map[string]any
	Raw    string
}

// errorCode returns the answer's error code, or "".
func (r response) errorCode() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		code, _ := e["code"].(string)
		return code
	}
	return ""
}

// do sends body (none when empty) as JSON when it starts with '{', as YAML otherwise.
func do(t *testing.T, srv *httptest.Server, method, path, body string) response {
	t.Helper()
	contentType := "application/yaml"
	if strings.HasPrefix(strings.TrimSpace(body), "{") {
		contentType = "application/json"
	}
	return doAs(t, srv, method, path, contentType, body)
}

// doAs sends body with the given Content-Type ("": none).
func doAs(t *testing.T, srv *httptest.Server, method, path, contentType, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, srv.URL+path, rd)
	require.NoError(t, err)
	if body != "" && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"), "%s %s: %s", method, path, b)
	out := response{Status: resp.StatusCode, Raw: string(b)}
	require.NoError(t, json.Unmarshal(b, &out.Body), "%s %s: %s", method, path, b)
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// putExamples registers the example definitions through the API, as YAML and JSON bodies.
func putExamples(t *testing.T, srv *httptest.Server) {
	t.Helper()
	for _, p := range []struct{ path, file string }{
		{"/v1/schemas/blob_input_schema_v1", "schemas/blob-input.yaml"},
		{"/v1/schemas/blob_output_schema_v1", "schemas/blob-output.json"},
		{"/v1/workflows/blob_summary", "workflows/blob-summary.yaml"},
		{"/v1/workflows/blob_processing_workflow", "workflows/blob-processing.yaml"},
		{"/v1/workflows/book_chapter_processing", "workflows/book-chapter-processing.yaml"},
		{"/v1/workflows/book_outline_generation", "workflows/book-outline-generation.yaml"},
		{"/v1/providers/blob-summary", "providers/blob-summary.yaml"},
		{"/v1/providers/book-writer", "providers/book-writer.yaml"},
	} {
		r := do(t, srv, http.MethodPut, p.path, readFile(t, "../../../definitions/"+p.file))
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", p.path, r.Raw)
	}
}

func TestDefinitionEndpoints(t *testing.T) {
	srv, _ := newServer(t, nil)
	wf := readFile(t, "../../../definitions/workflows/blob-summary.yaml")

	// A workflow before its schemas is refused: the registered set has none.
	r := do(t, srv, http.MethodPut, "/v1/workflows/blob_summary", wf)
	require.Equal(t, http.StatusUnprocessableEntity, r.Status, r.Raw)
	assert.Equal(t, "invalid_definition", r.errorCode())
	probs := r.Body["error"].(map[string]any)["problems"].([]any)
	require.Len(t, probs, 2, r.Raw)
	assert.Equal(t, map[string]any{"file": "workflows/blob_summary", "field": "input_schema_id",
		"message": `unknown schema "blob_input_schema_v1"`}, probs[0])

	putExamples(t, srv)

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string         // the error code, for errors
		want                     map[string]any // fields of the answer, for successes
	}{
		{name: "same definition again is a no-op", method: "PUT", path: "/v1/workflows/blob_summary", body: wf,
			status: 200, want: map[string]any{"id": "blob_summary", "revision": 1.0, "changed": false}},
		{name: "a changed definition is revision 2", method: "PUT", path: "/v1/workflows/blob_summary",
			body:   strings.Replace(wf, "name: Blob Summary", "name: Blob Summary 2", 1),
			status: 200, want: map[string]any{"id": "blob_summary", "revision": 2.0, "changed": true, "kind": "workflow"}},
		{name: "current revision", method: "GET", path: "/v1/workflows/blob_summary",
			status: 200, want: map[string]any{"revision": 2.0, "active": true}},
		{name: "older revision", method: "GET", path: "/v1/workflows/blob_summary?revision=1",
			status: 200, want: map[string]any{"revision": 1.0, "active": false}},
		{name: "missing revision", method: "GET", path: "/v1/workflows/blob_summary?revision=3", status: 404, code: "not_found"},
		{name: "bad revision", method: "GET", path: "/v1/workflows/blob_summary?revision=x", status: 400, code: "bad_request"},
		{name: "unknown definition", method: "GET", path: "/v1/schemas/nope", status: 404, code: "not_found"},
		{name: "a kind is its own namespace", method: "GET", path: "/v1/schemas/blob_summary", status: 404, code: "not_found"},
		{name: "JSON body", method: "PUT", path: "/v1/schemas/small",
			body:   `{"id": "small", "type": "input", "definition": {"type": "object"}}`,
			status: 200, want: map[string]any{"id": "small", "revision": 1.0, "changed": true}},
		{name: "body id differs from path", method: "PUT", path: "/v1/schemas/other",
			body: `{"id": "small", "definition": {"type": "object"}}`, status: 422, code: "invalid_definition"},
		{name: "broken YAML", method: "PUT", path: "/v1/workflows/x", body: "id: x\nsteps: [", status: 422, code: "invalid_definition"},
		{name: "invalid step", method: "PUT", path: "/v1/workflows/x",
			body: "id: x\nsteps: [{id: a, type: teleport}]\n", status: 422, code: "invalid_definition"},
		{name: "empty body", method: "PUT", path: "/v1/schemas/x", status: 400, code: "bad_request"},
		{name: "too large", method: "PUT", path: "/v1/schemas/x",
			body: `{"id": "x", "description": "` + strings.Repeat("x", 70<<10) + `", "definition": {}}`, status: 413, code: "too_large"},
		{name: "deactivate a workflow a provider binds", method: "DELETE", path: "/v1/workflows/blob_summary", status: 409, code: "in_use"},
		{name: "deactivate unknown", method: "DELETE", path: "/v1/providers/nope", status: 404, code: "not_found"},
		{name: "deactivate a provider", method: "DELETE", path: "/v1/providers/blob-summary",
			status: 200, want: map[string]any{"id": "blob-summary", "revision": 1.0, "changed": true, "active": false}},
		{name: "a deactivated definition is still served", method: "GET", path: "/v1/providers/blob-summary",
			status: 200, want: map[string]any{"id": "blob-summary", "revision": 1.0, "active": false}},
		{name: "deactivate again is a no-op", method: "DELETE", path: "/v1/providers/blob-summary",
			status: 200, want: map[string]any{"changed": false, "active": false}},
		{name: "now the workflow can go", method: "DELETE", path: "/v1/workflows/blob_summary",
			status: 200, want: map[string]any{"revision": 2.0, "changed": true}},
		{name: "wrong method", method: "POST", path: "/v1/schemas/x", status: 405, code: "method_not_allowed"},
		{name: "unknown route", method: "GET", path: "/v2/things", status: 404, code: "not_found"},
		{name: "no engine", method: "GET", path: "/v1/executions/x", status: 503, code: "unavailable"},
		{name: "healthz", method: "GET", path: "/healthz", status: 200, want: map[string]any{"status": "ok"}},
		{name: "readyz", method: "GET", path: "/readyz", status: 200, want: map[string]any{"status": "ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, tt.method, tt.path, tt.body)
			require.Equal(t, tt.status, r.Status, r.Raw)
			if tt.code != "" {
				assert.Equal(t, tt.code, r.errorCode(), r.Raw)
				assert.NotEmpty(t, r.Body["error"].(map[string]any)["message"], r.Raw)
			}
			for k, v := range tt.want {
				assert.Equal(t, v, r.Body[k], "%s in %s", k, r.Raw)
			}
		})
	}

	t.Run("lists hold the current revision of each", func(t *testing.T) {
		r := do(t, srv, http.MethodGet, "/v1/workflows", "")
		require.Equal(t, http.StatusOK, r.Status)
		var ids []string
		for _, it := range r.Body["items"].([]any) {
			item := it.(map[string]any)
			ids = append(ids, item["id"].(string))
			if item["id"] == "blob_summary" {
				assert.Equal(t, 2.0, item["revision"])
				assert.Equal(t, false, item["active"])
				assert.Equal(t, "Blob Summary 2", item["definition"].(map[string]any)["name"])
			}
		}
		assert.Equal(t, []string{"blob_processing_workflow", "blob_summary", "book_chapter_processing", "book_outline_generation"}, ids)

		r = do(t, srv, http.MethodGet, "/v1/schemas", "")
		assert.Len(t, r.Body["items"], 3)
	})

	t.Run("the method not allowed answer names the allowed ones", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPatch, srv.URL+"/v1/workflows/blob_summary", nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, "GET, PUT, DELETE", resp.Header.Get("Allow"))
	})
}

// A PUT on one process is seen by the API of another process on the same stream.
func TestDefinitionsAreSharedThroughTheStream(t *testing.T) {
	_, _, js := natstest.Run(t)
	a, _ := serve(t, js, nil)
	b, regB := serve(t, js, nil)

	r := do(t, a, http.MethodPut, "/v1/schemas/shared", `{"id": "shared", "definition": {"type": "string"}}`)
	require.Equal(t, http.StatusOK, r.Status, r.Raw)

	require.NoError(t, regB.Sync(testContext(t)))
	r = do(t, b, http.MethodGet, "/v1/schemas/shared", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	assert.Equal(t, map[string]any{"type": "string"}, r.Body["definition"].(map[string]any)["definition"])
}

func TestReadyzFailsWhenTheRegistryStopped(t *testing.T) {
	srv, reg := newServer(t, nil)
	require.NoError(t, reg.Stop(testContext(t)))
	r := do(t, srv, http.MethodGet, "/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, r.Status)
	assert.Equal(t, "unavailable", r.errorCode())
	assert.Equal(t, "definitions", r.Body["error"].(map[string]any)["dependency"], r.Raw)
	assert.Equal(t, http.StatusOK, do(t, srv, http.MethodGet, "/healthz", "").Status, "liveness does not depend on NATS")
}

func TestNewRequiresARegistry(t *testing.T) {
	_, err := api.New(api.Config{})
	assert.Error(t, err)
}
