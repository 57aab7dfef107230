package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
)

// BenchmarkGetExecution measures GET /v1/executions/{id} from the stream of finished 3-step
// executions (three api_call steps), read again and again: "one" reads the same execution,
// "100" a hundred in turn. "fold" is the API without Config.JetStream, which folds the whole
// history on every request (as every stream answer did before the cache); "cached" is the API
// with it, which asks the stream leader for the last sequence and answers the state it
// folded already.
func BenchmarkGetExecution(b *testing.B) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	b.Cleanup(svc.Close)
	_, _, js := natstest.Run(b)
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	require.NoError(b, stream.EnsureStreams(ctx, js, engine.StreamConfigs(opts)))
	reg, err := registry.New(js, registry.Config{Logger: quiet})
	require.NoError(b, err)
	require.NoError(b, reg.Start(ctx))
	b.Cleanup(func() { _ = reg.Stop(context.Background()) })
	u, err := url.Parse(svc.URL)
	require.NoError(b, err)
	svcs, err := services.NewRegistry(services.Service{Name: "svc", BaseURL: u})
	require.NoError(b, err)
	eng, err := engine.New(js, engine.Config{Definitions: reg, Services: svcs, Streams: opts, Logger: quiet})
	require.NoError(b, err)
	require.NoError(b, eng.Open(ctx))
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})

	serveB := func(cfg api.Config) *httptest.Server {
		cfg.Registry, cfg.Engine, cfg.Logger = reg, eng, quiet
		h, err := api.New(cfg)
		require.NoError(b, err)
		srv := httptest.NewServer(h)
		b.Cleanup(srv.Close)
		return srv
	}
	fold, cached := serveB(api.Config{}), serveB(api.Config{JetStream: js})

	r := doB(b, cached, "PUT", "/v1/workflows/three", "application/yaml", `id: three
steps:
  - {id: a, type: api_call, service: svc, endpoint: /a}
  - {id: b, type: api_call, service: svc, endpoint: /b}
  - {id: c, type: api_call, service: svc, endpoint: /c}
`)
	require.Equal(b, http.StatusOK, r.status, r.body)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = engine.IDForKey(fmt.Sprint("bench-", i))
		r := doB(b, cached, "POST", "/v1/executions", "application/json",
			fmt.Sprintf(`{"workflow_id": "three", "idempotency_key": "bench-%d"}`, i))
		require.Equal(b, http.StatusAccepted, r.status, r.body)
	}
	for _, id := range ids {
		require.Eventually(b, func() bool {
			s, err := eng.Execution(ctx, id)
			return err == nil && s.Status == "completed"
		}, time.Minute, 10*time.Millisecond)
	}

	for _, n := range []int{1, 100} {
		for _, c := range []struct {
			name string
			srv  *httptest.Server
		}{{"fold", fold}, {"cached", cached}} {
			b.Run(fmt.Sprintf("%d/%s", n, c.name), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if r := doB(b, c.srv, "GET", "/v1/executions/"+ids[i%n], "", ""); r.status != http.StatusOK {
						b.Fatal(r.body)
					}
				}
			})
		}
	}
}

type benchResponse struct {
	status int
	body   string
}

func doB(b *testing.B, srv *httptest.Server, method, path, contentType, body string) benchResponse {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	require.NoError(b, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(b, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b, err)
	return benchResponse{resp.StatusCode, string(data)}
}
