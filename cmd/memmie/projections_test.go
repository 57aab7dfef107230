package main

import (
	"context"
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

// TestProjectionsRebuildUnderServe: projections rebuild, beside a running serve, swaps fresh
// tables in that hold the same rows, and serve's projections go on writing into them.
func TestProjectionsRebuildUnderServe(t *testing.T) {
	svc := newSlowService(t)
	t.Setenv("MEMMIE_SERVICE_SVC_URL", svc.URL)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "workflows", "ok.yaml"), "id: ok\nsteps: [{id: call, type: api_call, service: svc, endpoint: /ok}]\n")
	nats, _, _ := natstest.Run(t)
	dbURL := pgtest.URL(t)
	srv := startBackground(t, "serve", "--nats-url", nats.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--database-url", dbURL, "--definitions", dir)
	apiURL := srv.ready(t)
	db, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })

	// completed counts the executions done in every projection.
	completed := func() (int, int, int) {
		var e, q, s int
		require.NoError(t, db.QueryRow(t.Context(), `SELECT
			(SELECT count(*) FROM executions WHERE status = 'completed'),
			(SELECT count(*) FROM queued_executions WHERE status = 'completed'),
			(SELECT count(*) FROM execution_steps WHERE status = 'succeeded')`).Scan(&e, &q, &s))
		return e, q, s
	}
	waitCompleted := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool {
			e, q, s := completed()
			return e == n && q == n && s == n
		}, 60*time.Second, 50*time.Millisecond, "the projections never held %d completed executions:\n%s", n, srv.out.String())
	}
	run := func() {
		t.Helper()
		code, _, errOut := executeSplit(t, "run", "ok", "--input", `{}`, "--api-url", apiURL)
		require.Equal(t, 0, code, errOut)
	}
	dump := func() map[string][]string {
		out := map[string][]string{}
		for _, table := range []string{"executions", "queued_executions", "execution_steps"} {
			rs, err := db.Query(t.Context(), `SELECT row_to_json(x)::text AS j FROM `+table+` x ORDER BY j`)
			require.NoError(t, err)
			out[table], err = pgx.CollectRows(rs, pgx.RowTo[string])
			require.NoError(t, err)
		}
		return out
	}
	oid := func() uint32 {
		var o uint32
		require.NoError(t, db.QueryRow(t.Context(), `SELECT 'executions'::regclass::oid`).Scan(&o))
		return o
	}
	for range 3 {
		run()
	}
	waitCompleted(3)
	before, beforeOID := dump(), oid()

	code, out, errOut := executeSplit(t, "projections", "rebuild", "--database-url", dbURL, "--nats-url", nats.ClientURL())
	require.Equal(t, 0, code, errOut)
	for _, name := range []string{"executions", "queued_executions", "execution_steps"} {
		assert.Contains(t, out, name+": replayed ")
		assert.Contains(t, out, name+": swapped in at ")
		assert.Regexp(t, name+`: rebuilt: \d+ events in \S+ \(the replay applied \d+ events/s\)`, out)
	}
	assert.NotEqual(t, beforeOID, oid(), "a fresh executions table was swapped in")
	assert.Equal(t, before, dump(), "the rebuilt tables hold the same rows")

	// serve's projections go on, into the fresh tables.
	run()
	waitCompleted(4)

	// One of them by name; an unknown name is refused with the known ones.
	code, out, errOut = executeSplit(t, "projections", "rebuild", "queued_executions", "--database-url", dbURL, "--nats-url", nats.ClientURL())
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "queued_executions: swapped in at ")
	assert.NotContains(t, out, "execution_steps")
	code, _, errOut = executeSplit(t, "projections", "rebuild", "nope", "--database-url", dbURL, "--nats-url", nats.ClientURL())
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `no projection "nope": want one of executions, queued_executions, execution_steps`)
	code, _, errOut = executeSplit(t, "projections", "rebuild", "--nats-url", nats.ClientURL())
	assert.Equal(t, 1, code)
	assert.True(t, strings.Contains(errOut, "--database-url"), errOut)
	waitCompleted(4)
}
