package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// get sends GET path with the Authorization header auth ("": none).
func get(t *testing.T, srv *httptest.Server, path, auth string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

func TestToken(t *testing.T) {
	reg := startRegistryOn(t)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "memmie_up 1\n") })
	serveToken := func(token string) *httptest.Server {
		h, err := api.New(api.Config{Registry: reg, Logger: testLogger(t), Token: token, Metrics: metrics})
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv
	}

	t.Run("without a token every route is open", func(t *testing.T) {
		srv := serveToken("")
		st, _, body := get(t, srv, "/v1/workflows", "")
		assert.Equal(t, http.StatusOK, st, body)
		st, _, body = get(t, srv, "/metrics", "")
		assert.Equal(t, http.StatusOK, st)
		assert.Equal(t, "memmie_up 1\n", body)
	})

	t.Run("with a token", func(t *testing.T) {
		srv := serveToken("s3cret-token")
		for _, c := range []struct {
			name, path, auth string
			status           int
		}{
			{"no header", "/v1/workflows", "", 401},
			{"wrong token", "/v1/workflows", "Bearer s3cret-tokeN", 401},
			{"a prefix of the token", "/v1/workflows", "Bearer s3cret", 401},
			{"empty token", "/v1/workflows", "Bearer ", 401},
			{"basic scheme", "/v1/workflows", "Basic s3cret-token", 401},
			{"the token alone", "/v1/workflows", "s3cret-token", 401},
			{"unknown route", "/v1/nothing", "", 401},
			{"an execution", "/v1/executions/x", "", 401},
			{"dot segments do not reach an open path", "/healthz/../v1/workflows", "", 401},
			{"right token", "/v1/workflows", "Bearer s3cret-token", 200},
			{"scheme in lower case", "/v1/workflows", "bearer s3cret-token", 200},
			{"healthz is open", "/healthz", "", 200},
			{"readyz is open", "/readyz", "", 200},
			{"metrics is open", "/metrics", "", 200},
		} {
			t.Run(c.name, func(t *testing.T) {
				st, h, body := get(t, srv, c.path, c.auth)
				assert.Equal(t, c.status, st, body)
				if c.status == http.StatusUnauthorized {
					assert.JSONEq(t, `{"error": {"code": "unauthorized", "message": "this memmie needs a token: send Authorization: Bearer <token> (memmie commands: --api-token or MEMMIE_API_TOKEN)"}}`, body)
					assert.Equal(t, `Bearer realm="memmie"`, h.Get("WWW-Authenticate"))
					assert.NotContains(t, body, "s3cret")
				}
			})
		}
	})
}

// readyDependency GETs /readyz and returns the status, the error's dependency and message.
func readyDependency(t *testing.T, srv *httptest.Server) (int, string, string) {
	t.Helper()
	r := do(t, srv, http.MethodGet, "/readyz", "")
	e, _ := r.Body["error"].(map[string]any)
	dep, _ := e["dependency"].(string)
	msg, _ := e["message"].(string)
	if r.Status != http.StatusOK {
		assert.Equal(t, "unavailable", r.errorCode(), r.Raw)
		assert.True(t, strings.HasPrefix(msg, dep+": "), "the message starts with the dependency: %s", r.Raw)
	}
	return r.Status, dep, msg
}

func TestReadyzNamesTheDependencyDown(t *testing.T) {
	ns, _, js := natstest.Run(t)
	reg := startRegistry(t, js)
	eng, err := engine.New(js, engine.Config{Definitions: reg, Logger: testLogger(t),
		Streams: streams.Options{Storage: jetstream.MemoryStorage}})
	require.NoError(t, err)
	require.NoError(t, eng.Open(testContext(t)))
	srv := serveWith(t, reg, eng)

	st, _, _ := readyDependency(t, srv)
	require.Equal(t, http.StatusOK, st)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, eng.Close(ctx))
	st, dep, msg := readyDependency(t, srv)
	assert.Equal(t, http.StatusServiceUnavailable, st)
	assert.Equal(t, "handlers", dep, msg)

	require.NoError(t, js.DeleteStream(testContext(t), streams.Deltas))
	st, dep, msg = readyDependency(t, srv)
	assert.Equal(t, http.StatusServiceUnavailable, st)
	assert.Equal(t, "streams", dep, msg)
	assert.Contains(t, msg, streams.Deltas)

	// Until the connection notices the server is gone, a check may time out on a stream first:
	// poll until /readyz names nats.
	ns.Shutdown()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, dep, msg := readyDependency(t, srv)
		assert.Equal(c, http.StatusServiceUnavailable, st)
		assert.Equal(c, "nats", dep, msg)
	}, 20*time.Second, 50*time.Millisecond)
}
