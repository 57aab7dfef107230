package api_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/pgtest"
)

// queueIDs returns the execution ids of a queue answer, in order.
func queueIDs(t *testing.T, r response) []string {
	t.Helper()
	return listedIDs(t, r, "queue", "execution_id")
}

func TestListQueue(t *testing.T) {
	// /slow holds its call until the test ends: with one execution running at a time, the
	// ones queued after it stay pending.
	release := make(chan struct{})
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(svc.Close)
	srv := newProjectedStackWith(t, svc, dispatcher.Config{MaxRunning: 1})
	t.Cleanup(func() { close(release) }) // before the engine closes, which waits for its calls
	for _, id := range []string{"fast", "slow"} {
		r := do(t, srv, "PUT", "/v1/workflows/"+id,
			fmt.Sprintf("id: %s\nsteps: [{id: call, type: api_call, service: svc, endpoint: /%s}]\n", id, id))
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
	}
	start := func(wf string, priority int) string {
		r := do(t, srv, "POST", "/v1/executions", fmt.Sprintf(`{"workflow_id": %q, "priority": %d}`, wf, priority))
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		return r.Body["execution_id"].(string)
	}
	// poll GETs path until cond holds of the answer.
	poll := func(path string, cond func(response) bool) response {
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := do(t, srv, "GET", path, "")
			require.Equal(t, http.StatusOK, r.Status, r.Raw)
			if cond(r) {
				return r
			}
			require.True(t, time.Now().Before(deadline), "GET %s not as wanted within 60s: %s", path, r.Raw)
			time.Sleep(50 * time.Millisecond)
		}
	}

	// One that ends, then one that runs until the end of the test, then four that wait.
	done := start("fast", 50)
	poll("/v1/queue?status=completed", func(r response) bool { return len(queueIDs(t, r)) == 1 })
	running := start("slow", 9)
	poll("/v1/queue?status=running", func(r response) bool {
		got := queueIDs(t, r)
		return len(got) == 1 && got[0] == running
	})
	b, c, d, e := start("slow", 0), start("slow", 5), start("slow", 1), start("slow", 5)
	order := []string{running, c, e, d, b} // priority DESC, then queued first
	all := poll("/v1/queue", func(r response) bool { return len(queueIDs(t, r)) == len(order) })

	t.Run("the rows not ended, in the order they start, with every column", func(t *testing.T) {
		assert.Equal(t, order, queueIDs(t, all))
		assert.NotContains(t, all.Body, "next", "one page holds them all")
		rows := all.Body["queue"].([]any)
		first := rows[0].(map[string]any)
		assert.Equal(t, "running", first["status"])
		assert.Equal(t, "slow", first["workflow_id"])
		assert.Equal(t, 9.0, first["priority"])
		assert.Equal(t, 0.0, first["retry_count"])
		assert.Contains(t, first, "max_retries")
		assert.NotEmpty(t, first["id"])
		assert.NotEqual(t, first["execution_id"], first["id"])
		assert.Equal(t, 1.0, first["metadata"].(map[string]any)["run"])
		for _, f := range []string{"queued_at", "created_at", "updated_at"} {
			_, err := time.Parse(time.RFC3339Nano, first[f].(string))
			assert.NoError(t, err, f)
		}
		for _, row := range rows[1:] {
			assert.Equal(t, "pending", row.(map[string]any)["status"])
		}
	})

	t.Run("pages follow the cursor", func(t *testing.T) {
		got, pages := followPages(t, srv, "/v1/queue?limit=2", queueIDs)
		assert.Equal(t, 3, pages)
		assert.Equal(t, order, got)
	})

	t.Run("filters", func(t *testing.T) {
		assert.Equal(t, []string{done}, queueIDs(t, do(t, srv, "GET", "/v1/queue?status=completed", "")))
		assert.Equal(t, []string{running}, queueIDs(t, do(t, srv, "GET", "/v1/queue?status=running", "")))
		assert.Equal(t, []string{c, e, d, b}, queueIDs(t, do(t, srv, "GET", "/v1/queue?status=pending", "")))
		assert.Empty(t, queueIDs(t, do(t, srv, "GET", "/v1/queue?status=failed", "")))
		// A filter with a cursor: the page after the first pending one, past a priority tie.
		first := do(t, srv, "GET", "/v1/queue?status=pending&limit=1", "")
		assert.Equal(t, []string{c}, queueIDs(t, first))
		next := do(t, srv, "GET", "/v1/queue?status=pending&limit=2&cursor="+url.QueryEscape(first.Body["next"].(string)), "")
		assert.Equal(t, []string{e, d}, queueIDs(t, next))
	})

	t.Run("bad parameters are 400", func(t *testing.T) {
		for _, q := range []string{"status=queued", "status=done", "limit=0", "limit=501", "limit=ten", "cursor=%21%21",
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("5.12.not-a-uuid")),
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("12."+running)), // an executions cursor
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("nope"))} {
			r := do(t, srv, "GET", "/v1/queue?"+q, "")
			assert.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", q, r.Raw)
			assert.Equal(t, "bad_request", r.errorCode(), q)
		}
		assert.Len(t, queueIDs(t, do(t, srv, "GET", "/v1/queue?limit=500", "")), len(order))
	})
}

func TestListQueueWithoutADatabase(t *testing.T) {
	srv, _ := newServer(t, &cannedEngine{})
	assertNoDatabase(t, do(t, srv, "GET", "/v1/queue", ""))
}

func TestReadyzChecksPostgres(t *testing.T) {
	pool := pgtest.New(t)
	h, err := api.New(api.Config{Registry: startRegistryOn(t), Postgres: pool.Ping, Logger: testLogger(t)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	status, _, msg := readyDependency(t, srv)
	assert.Equal(t, http.StatusOK, status, msg)

	pool.Close()
	status, dep, msg := readyDependency(t, srv)
	assert.Equal(t, http.StatusServiceUnavailable, status, msg)
	assert.Equal(t, "postgres", dep, msg)
}
