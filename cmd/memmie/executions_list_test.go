package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
)

// TestServeProjectsExecutions: serve with a database runs the executions projection, so that
// the executions it ran are listed, newest first, as a table or JSON, a page at a time.
func TestServeProjectsExecutions(t *testing.T) {
	svc := newSlowService(t)
	t.Setenv("MEMMIE_SERVICE_SVC_URL", svc.URL)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "workflows", "ok.yaml"), "id: ok\nsteps: [{id: call, type: api_call, service: svc, endpoint: /ok}]\n")
	writeFile(t, filepath.Join(dir, "workflows", "fail.yaml"), "id: fail\nsteps: [{id: call, type: api_call, service: svc, endpoint: /fail}]\n")
	nats, _, _ := natstest.Run(t)
	dbURL := pgtest.URL(t)
	srv := startBackground(t, "serve", "--nats-url", nats.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--database-url", dbURL, "--definitions", dir)
	apiURL := srv.ready(t)

	var ids []string // in start order
	for _, wf := range []string{"ok", "fail", "ok"} {
		code, out, errOut := executeSplit(t, "run", wf, "--input", `{}`, "--api-url", apiURL)
		require.Equal(t, 0, code, errOut)
		ids = append(ids, strings.TrimSpace(out))
	}

	list := func(args ...string) (int, string, string) {
		return executeSplit(t, append([]string{"executions", "list", "--api-url", apiURL}, args...)...)
	}
	var page struct {
		Executions []struct {
			ExecutionID string `json:"execution_id"`
			Status      string `json:"status"`
		} `json:"executions"`
		Next string `json:"next"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out, errOut := list("--json")
		require.Equal(t, 0, code, errOut)
		require.NoError(t, json.Unmarshal([]byte(out), &page), out)
		ended := 0
		for _, e := range page.Executions {
			if e.Status == "completed" || e.Status == "failed" {
				ended++
			}
		}
		if ended == len(ids) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the projection does not hold the three ended executions within 60s:\n%s\n%s", out, srv.out.String())
		time.Sleep(50 * time.Millisecond)
	}
	require.Len(t, page.Executions, 3)
	assert.Equal(t, []string{ids[2], ids[1], ids[0]}, []string{page.Executions[0].ExecutionID,
		page.Executions[1].ExecutionID, page.Executions[2].ExecutionID}, "newest first")
	assert.Empty(t, page.Next)

	// serve runs the other projections too: the queue's and the steps' rows follow.
	db, dberr := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, dberr)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	require.Eventually(t, func() bool {
		var queued, steps int
		err := db.QueryRow(t.Context(), `SELECT
			(SELECT count(*) FROM queued_executions WHERE status IN ('completed', 'failed')),
			(SELECT count(*) FROM execution_steps WHERE status IN ('succeeded', 'failed'))`).Scan(&queued, &steps)
		return err == nil && queued == 3 && steps == 3
	}, 60*time.Second, 50*time.Millisecond, "queued_executions and execution_steps hold the three executions")
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM definitions WHERE kind = 'workflow' AND current AND active`).Scan(&n)
		return err == nil && n == 2
	}, 60*time.Second, 50*time.Millisecond, "the definitions projection holds the two workflows")
	// /metrics: the executions' durations and statuses, and the projections caught up.
	require.Eventually(t, func() bool {
		resp, err := http.Get(apiURL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		text := string(b)
		return err == nil && strings.Contains(text, `memmie_executions{status="completed"} 2`) &&
			strings.Contains(text, `memmie_executions{status="failed"} 1`) &&
			strings.Contains(text, `memmie_execution_duration_seconds_count{status="completed",workflow="ok"} 2`) &&
			strings.Contains(text, `memmie_execution_run_duration_seconds_count{status="failed",workflow="fail"} 1`) &&
			strings.Contains(text, `memmie_projection_lag_messages{projection="definitions",stream="MEMMIE_DEFINITIONS"} 0`) &&
			strings.Contains(text, `memmie_projection_lag_messages{projection="executions",stream="MEMMIE_EXECUTIONS"} 0`)
	}, 60*time.Second, 50*time.Millisecond, "/metrics shows the executions and the projections caught up")
	// and the API serves the queue from them, in the order the dispatcher starts them.
	resp, err := http.Get(apiURL + "/v1/queue?status=completed")
	require.NoError(t, err)
	var queue struct {
		Queue []struct {
			ExecutionID string `json:"execution_id"`
		} `json:"queue"`
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&queue))
	require.NoError(t, resp.Body.Close())
	require.Len(t, queue.Queue, 2)
	assert.Equal(t, []string{ids[0], ids[2]}, []string{queue.Queue[0].ExecutionID, queue.Queue[1].ExecutionID})

	// rows returns the table's rows as fields, the header apart.
	rows := func(out string) [][]string {
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Equal(t, []string{"ID", "WORKFLOW", "STATUS", "PRIORITY", "QUEUED", "AT"}, strings.Fields(lines[0]))
		var out2 [][]string
		for _, l := range lines[1:] {
			out2 = append(out2, strings.Fields(l))
		}
		return out2
	}
	code, out, errOut := list()
	require.Equal(t, 0, code, errOut)
	table := rows(out)
	require.Len(t, table, 3, out)
	assert.Equal(t, []string{ids[2], "ok", "completed", "0"}, table[0][:4])
	assert.Equal(t, []string{ids[1], "fail", "failed", "0"}, table[1][:4])
	_, err = time.Parse(time.RFC3339, table[0][4])
	assert.NoError(t, err, "queued at")

	code, out, errOut = list("--status", "failed")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, ids[1], rows(out)[0][0])
	assert.Len(t, rows(out), 1)
	code, out, errOut = list("--workflow", "ok")
	require.Equal(t, 0, code, errOut)
	assert.Len(t, rows(out), 2)

	code, out, errOut = list("--limit", "1")
	require.Equal(t, 0, code, errOut)
	assert.Len(t, rows(out), 1)
	assert.Contains(t, errOut, "more: --cursor ")
	code, all, errOut := list("--limit", "1", "--all")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, table, rows(all), "--all follows the pages")
	assert.NotContains(t, errOut, "more:")

	code, _, errOut = list("--status", "done")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "bad_request")
	code, _, errOut = list("--limit", "501")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "--limit")
	require.NoError(t, srv.stop(t))
}
