package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/pgtest"
)

// TestListsWithPostgresDown: a list read while the database does not answer is 503 naming
// postgres, as /readyz is, not a 500 that says memmie is broken.
func TestListsWithPostgresDown(t *testing.T) {
	pool := pgtest.New(t)
	h, err := api.New(api.Config{Registry: startRegistryOn(t), Views: views.New(pool), Postgres: pool.Ping, Logger: testLogger(t)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/v1/executions", "/v1/queue"} {
		r := do(t, srv, http.MethodGet, path, "")
		assert.Equal(t, http.StatusOK, r.Status, r.Raw)
	}

	pool.Close()
	for _, path := range []string{"/v1/executions", "/v1/queue"} {
		r := do(t, srv, http.MethodGet, path, "")
		assert.Equal(t, http.StatusServiceUnavailable, r.Status, r.Raw)
		assert.Equal(t, "unavailable", r.errorCode(), r.Raw)
		e, _ := r.Body["error"].(map[string]any)
		assert.Equal(t, "postgres", e["dependency"], r.Raw)
	}
	r := do(t, srv, http.MethodGet, "/v1/executions?limit=0", "")
	assert.Equal(t, http.StatusBadRequest, r.Status, "a bad request stays one: %s", r.Raw)
}
