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
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// newProjectedStack is newStack with a database: the executions and queued_executions
// projections' Runners fold the stream into it, and the API lists from it.
func newProjectedStack(t *testing.T, svc *httptest.Server) *httptest.Server {
	t.Helper()
	return newProjectedStackWith(t, svc, dispatcher.Config{})
}

// newProjectedStackWith is newProjectedStack with the dispatcher's config d.
func newProjectedStackWith(t *testing.T, svc *httptest.Server, d dispatcher.Config) *httptest.Server {
	t.Helper()
	js, reg, eng := startEngine(t, svc, d)
	pool := pgtest.New(t)
	runProjections(t, projections.Config{Pool: pool, JS: js, Log: testLogger(t)},
		projections.NewExecutions(testLogger(t)), projections.NewQueued(testLogger(t)))
	return serveAPI(t, api.Config{Registry: reg, Engine: eng, Views: views.New(pool), Logger: testLogger(t)})
}

// ids returns the execution ids of a list's answer, in order.
func ids(t *testing.T, r response) []string {
	t.Helper()
	return listedIDs(t, r, "executions", "execution_id")
}

func TestListExecutions(t *testing.T) {
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadRequest)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(svc.Close)
	srv := newProjectedStack(t, svc)
	for _, id := range []string{"ok", "fail"} {
		r := do(t, srv, "PUT", "/v1/workflows/"+id,
			fmt.Sprintf("id: %s\nsteps: [{id: call, type: api_call, service: svc, endpoint: /%s}]\n", id, id))
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
	}

	// Five executions, one after the other: ok, fail, ok, fail, ok.
	var started []string
	for i := range 5 {
		wf := []string{"ok", "fail"}[i%2]
		r := do(t, srv, "POST", "/v1/executions", fmt.Sprintf(`{"workflow_id": %q, "input": {"n": %d}, "priority": %d}`, wf, i, i))
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		started = append(started, r.Body["execution_id"].(string))
	}
	newestFirst := make([]string, len(started))
	for i, id := range started {
		newestFirst[len(started)-1-i] = id
	}

	// The projection follows the stream: poll until it holds the five, ended.
	deadline := time.Now().Add(60 * time.Second)
	var all response
	for {
		all = do(t, srv, "GET", "/v1/executions", "")
		require.Equal(t, http.StatusOK, all.Status, all.Raw)
		ended := 0
		for _, e := range all.Body["executions"].([]any) {
			if s := e.(map[string]any)["status"]; s == "completed" || s == "failed" {
				ended++
			}
		}
		if ended == len(started) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the projection does not hold the five ended executions within 60s: %s", all.Raw)
		time.Sleep(50 * time.Millisecond)
	}

	t.Run("newest first, with the row's fields", func(t *testing.T) {
		assert.Equal(t, newestFirst, ids(t, all))
		assert.NotContains(t, all.Body, "next", "one page holds them all")
		rows := all.Body["executions"].([]any)
		last := rows[0].(map[string]any) // the fifth: ok, priority 4
		assert.Equal(t, "ok", last["workflow_id"])
		assert.Equal(t, "completed", last["status"])
		assert.Equal(t, 4.0, last["priority"])
		assert.Equal(t, 1.0, last["workflow_revision"])
		assert.Equal(t, 1.0, last["run"])
		assert.Equal(t, map[string]any{"n": 4.0}, last["input"])
		assert.NotNil(t, last["output"])
		assert.NotContains(t, last, "error")
		for _, f := range []string{"queued_at", "started_at", "ended_at", "updated_at"} {
			_, err := time.Parse(time.RFC3339Nano, last[f].(string))
			assert.NoError(t, err, f)
		}
		failed := rows[1].(map[string]any)
		assert.Equal(t, "failed", failed["status"])
		assert.NotNil(t, failed["error"])
	})

	t.Run("pages follow the cursor", func(t *testing.T) {
		got, pages := followPages(t, srv, "/v1/executions?limit=2", ids)
		assert.Equal(t, 3, pages)
		assert.Equal(t, newestFirst, got)
	})

	t.Run("filters", func(t *testing.T) {
		assert.Equal(t, []string{started[3], started[1]}, ids(t, do(t, srv, "GET", "/v1/executions?status=failed", "")))
		assert.Equal(t, []string{started[4], started[2], started[0]}, ids(t, do(t, srv, "GET", "/v1/executions?workflow_id=ok", "")))
		assert.Empty(t, ids(t, do(t, srv, "GET", "/v1/executions?workflow_id=ok&status=failed", "")))
		// Started through the API, they have no provider and no blob.
		assert.Empty(t, ids(t, do(t, srv, "GET", "/v1/executions?provider_id=notes", "")))
		assert.Empty(t, ids(t, do(t, srv, "GET", "/v1/executions?blob_id=b1", "")))
		assert.Empty(t, ids(t, do(t, srv, "GET", "/v1/executions?status=running", "")))
		// A filter with a cursor: the page after the first failed one.
		first := do(t, srv, "GET", "/v1/executions?status=failed&limit=1", "")
		assert.Equal(t, []string{started[3]}, ids(t, first))
		next := do(t, srv, "GET", "/v1/executions?status=failed&limit=1&cursor="+url.QueryEscape(first.Body["next"].(string)), "")
		assert.Equal(t, []string{started[1]}, ids(t, next))
	})

	t.Run("bad parameters are 400", func(t *testing.T) {
		for _, q := range []string{"status=done", "limit=0", "limit=501", "limit=ten", "cursor=%21%21",
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("12.not-a-uuid")),
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("nope"))} {
			r := do(t, srv, "GET", "/v1/executions?"+q, "")
			assert.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", q, r.Raw)
			assert.Equal(t, "bad_request", r.errorCode(), q)
		}
		assert.Len(t, ids(t, do(t, srv, "GET", "/v1/executions?limit=500", "")), 5)
	})
}

func TestListExecutionsWithoutADatabase(t *testing.T) {
	srv, _ := newServer(t, &cannedEngine{})
	assertNoDatabase(t, do(t, srv, "GET", "/v1/executions", ""))
}

// followPages reads a list from path (which asks for pages of 2) page after page, following
// next, and returns the ids of every page, in order, and how many pages there were.
func followPages(t *testing.T, srv *httptest.Server, path string, idsOf func(*testing.T, response) []string) ([]string, int) {
	t.Helper()
	var got []string
	cursor, pages := "", 0
	for {
		p := path
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		r := do(t, srv, "GET", p, "")
		page := idsOf(t, r)
		require.LessOrEqual(t, len(page), 2)
		got = append(got, page...)
		pages++
		next, _ := r.Body["next"].(string)
		if next == "" {
			return got, pages
		}
		require.Less(t, pages, 5, "the pages end")
		cursor = next
	}
}
