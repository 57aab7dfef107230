package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
)

// testAPI is a memmie process for the client commands: the API over the real registry and
// the real engine on an embedded JetStream server.
type testAPI struct {
	URL string
	reg *registry.Registry
	// gets counts the GET requests of one execution (GET /v1/executions/{id}) it served.
	gets atomic.Int64
	// dropWaits, while above 0, is how many more waits (GET /v1/executions/{id}?wait=) have
	// their connection closed without an answer.
	dropWaits atomic.Int64
}

// newTestAPI starts it; svcURL, when set, is the base URL of the service named svc.
func newTestAPI(t *testing.T, svcURL string) *testAPI { return newTestAPIFollowing(t, svcURL, true) }

// newTestAPIFollowing is newTestAPI whose API follows executions (api.Config.JetStream) only
// when follow is set.
func newTestAPIFollowing(t *testing.T, svcURL string, follow bool) *testAPI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	_, _, js := natstest.Run(t)
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(opts)))

	reg, err := registry.New(js, registry.Config{Logger: log})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })

	var list []services.Service
	if svcURL != "" {
		u, err := url.Parse(svcURL)
		require.NoError(t, err)
		list = append(list, services.Service{Name: "svc", BaseURL: u})
	}
	svcs, err := services.NewRegistry(list...)
	require.NoError(t, err)
	eng, err := engine.New(js, engine.Config{Definitions: reg, Services: svcs, Streams: opts, Logger: log})
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, eng.Close(ctx))
	})

	cfg := api.Config{Registry: reg, Engine: eng, Logger: log}
	if follow {
		cfg.JetStream = js
	}
	h, err := api.New(cfg)
	require.NoError(t, err)
	ta := &testAPI{reg: reg}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/executions/"); ok && r.Method == http.MethodGet && !strings.Contains(rest, "/") {
			ta.gets.Add(1)
			if r.URL.Query().Has("wait") && ta.dropWaits.Add(-1) >= 0 {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ta.URL = srv.URL
	return ta
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func TestApply(t *testing.T) {
	srv := newTestAPI(t, "")

	set, err := definitions.Load("../../definitions")
	require.NoError(t, err)
	var want []string
	for _, def := range setDefinitions(set) {
		want = append(want, string(def.Kind())+" "+def.DefinitionID()+" revision 1 changed")
	}

	code, out := execute(t, "apply", "--api-url", srv.URL, "../../definitions")
	require.Equal(t, 0, code, out)
	assert.Equal(t, want, strings.Split(strings.TrimSpace(out), "\n"))
	assert.True(t, strings.HasPrefix(want[0], "schema "), "schemas first")
	assert.True(t, strings.HasPrefix(want[len(want)-1], "provider "), "providers last")

	t.Run("again is a no-op", func(t *testing.T) {
		code, out := execute(t, "apply", "--api-url", srv.URL, "../../definitions")
		require.Equal(t, 0, code, out)
		assert.Equal(t, strings.Count(out, "\n"), strings.Count(out, "revision 1 unchanged\n"), out)
	})

	t.Run("a workflow may name schemas the server holds", func(t *testing.T) {
		dir := t.TempDir()
		src, err := os.ReadFile("../../definitions/workflows/blob-summary.yaml")
		require.NoError(t, err)
		writeFile(t, filepath.Join(dir, "workflows", "s.yaml"), strings.Replace(string(src), "name: Blob Summary", "name: Changed", 1))
		code, out := execute(t, "apply", "--api-url", srv.URL, dir)
		require.Equal(t, 0, code, out)
		assert.Equal(t, "workflow blob_summary revision 2 changed\n", out)
	})

	t.Run("an invalid set registers nothing", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "schemas", "ok.yaml"), "id: fresh_schema\ndefinition: {type: object}\n")
		bad := filepath.Join(dir, "workflows", "bad.yaml")
		writeFile(t, bad, "id: bad\ninput_schema_id: nope\nsteps: [{id: a, type: transform, input_map: {x: 1}}]\n")
		code, out := execute(t, "apply", "--api-url", srv.URL, dir)
		assert.Equal(t, 1, code, out)
		assert.Equal(t, bad+`:2: input_schema_id: unknown schema "nope"`+"\n", out)
		_, ok := srv.reg.Current(definitions.KindSchema, "fresh_schema")
		assert.False(t, ok, "the valid schema of the set was not registered")
	})

	t.Run("a broken file is reported with its line", func(t *testing.T) {
		dir := t.TempDir()
		bad := filepath.Join(dir, "workflows", "bad.yaml")
		writeFile(t, bad, "id: bad\nsteps:\n  - id: a\n    type: teleport\n")
		code, out := execute(t, "apply", "--api-url", srv.URL, dir)
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, bad+":4: steps[0].type: ")
	})

	t.Run("no server", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		code, out := execute(t, "apply", "--api-url", dead.URL, "../../definitions")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "register schema blob_input_schema_v1")
	})

	t.Run("a bad api url", func(t *testing.T) {
		code, out := execute(t, "apply", "--api-url", "localhost:8080", "../../definitions")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "--api-url")
	})

	t.Run("the api url falls back to MEMMIE_API_URL", func(t *testing.T) {
		t.Setenv("MEMMIE_API_URL", srv.URL)
		code, out := execute(t, "apply", "../../definitions/schemas")
		require.Equal(t, 0, code, out)
		assert.Contains(t, out, "schema blob_input_schema_v1 revision 1 unchanged")
	})
}
