package migrations_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/migrations"
)

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func files(t *testing.T) []string {
	t.Helper()
	entries, err := migrations.FS.ReadDir(".")
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.NotEmpty(t, names)
	return names
}

func TestUpTwiceIsANoOp(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.EmptyURL(t))
	applied, err := migrations.Up(ctx, db)
	require.NoError(t, err)
	var got []string
	for _, a := range applied {
		got = append(got, a.File)
	}
	require.Equal(t, files(t), got, "the first Up applies every file, in order")

	applied, err = migrations.Up(ctx, db)
	require.NoError(t, err)
	require.Empty(t, applied)
}

// TestConcurrentUpsApplyEachMigrationOnce starts three Ups at once, each on a connection pool
// of its own, as three processes starting together do.
func TestConcurrentUpsApplyEachMigrationOnce(t *testing.T) {
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	const starters = 3
	var (
		wg      sync.WaitGroup
		applied [starters][]migrations.Applied
		errs    [starters]error
	)
	for i := range starters {
		db := open(t, url)
		wg.Go(func() { applied[i], errs[i] = migrations.Up(ctx, db) })
	}
	wg.Wait()
	total := 0
	for i := range starters {
		require.NoError(t, errs[i], "starter %d", i)
		total += len(applied[i])
	}
	require.Equal(t, len(files(t)), total, "each migration applied by exactly one starter")

	var rows, versions int
	require.NoError(t, open(t, url).QueryRowContext(ctx,
		"SELECT count(*), count(DISTINCT version_id) FROM "+migrations.VersionTable+" WHERE version_id > 0").Scan(&rows, &versions))
	require.Equal(t, len(files(t)), rows, "one row per migration in the version table")
	require.Equal(t, rows, versions)
}

func TestTablesHaveTheirColumns(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.EmptyURL(t))
	_, err := migrations.Up(ctx, db)
	require.NoError(t, err)

	want := map[string][]string{
		"queued_executions": {"id", "execution_id", "workflow_id", "workflow_revision", "priority", "status",
			"retry_count", "max_retries", "provider_id", "trigger", "blob_id", "queued_at", "created_at",
			"updated_at", "metadata"},
		"executions": {"execution_id", "workflow_id", "workflow_revision", "status", "priority", "input",
			"output", "error", "run", "provider_id", "blob_id", "queued_at", "started_at", "ended_at", "updated_at",
			"deltas_rejected"},
		"execution_steps": {"execution_id", "run", "step_id", "attempt", "compensation", "status", "request",
			"output", "error", "duration_ms", "started_at", "ended_at"},
		"definitions":            {"kind", "id", "revision", "current", "active", "canonical", "registered_at"},
		"dead_letters":           {"id", "source", "reason", "subject", "headers", "data", "stream", "stream_seq", "recorded_at", "redriven_at", "truncated"},
		"projection_checkpoints": {"projection", "stream", "last_seq", "updated_at"},
	}
	for table, columns := range want {
		rows, err := db.QueryContext(ctx, `SELECT column_name FROM information_schema.columns
			WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position`, table)
		require.NoError(t, err)
		var got []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			got = append(got, c)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, columns, got, table)
	}

	// The queue's status is one of five.
	_, err = db.ExecContext(ctx, `INSERT INTO queued_executions (id, execution_id, workflow_id, workflow_revision, status, queued_at)
		VALUES (gen_random_uuid(), gen_random_uuid(), 'w', 1, 'sleeping', now())`)
	require.ErrorContains(t, err, "queued_executions_status_check")
	// The queue is read highest priority first, oldest first, through its index.
	var index string
	require.NoError(t, db.QueryRowContext(ctx,
		`SELECT indexdef FROM pg_indexes WHERE indexname = 'queued_executions_next'`).Scan(&index))
	require.Contains(t, index, "(status, priority DESC, queued_at)")
}

// TestExecutionsListFiltersUseAnIndex: each filter of the executions list, with the cursor,
// is read through an index in the list's order, not by a scan of the table.
func TestExecutionsListFiltersUseAnIndex(t *testing.T) {
	ctx := context.Background()
	db := open(t, pgtest.EmptyURL(t))
	_, err := migrations.Up(ctx, db)
	require.NoError(t, err)
	// Enough rows of each provider and blob that the order matters: a page is the first rows of
	// the index, not a sort of all the rows that match.
	_, err = db.ExecContext(ctx, `INSERT INTO executions (execution_id, workflow_id, workflow_revision, status, provider_id, blob_id, queued_at)
		SELECT gen_random_uuid(), 'w' || (i % 10), 1, 'completed',
			CASE WHEN i % 2 = 0 THEN 'p' || (i % 8) END, CASE WHEN i % 2 = 0 THEN 'b' || (i % 16) END,
			now() - i * interval '1 second'
		FROM generate_series(1, 20000) AS i`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ANALYZE executions")
	require.NoError(t, err)

	for filter, index := range map[string]string{
		"provider_id = 'p4'": "executions_provider",
		"blob_id = 'b4'":     "executions_blob",
	} {
		for _, cursor := range []string{"", " AND (queued_at, execution_id) < (now(), gen_random_uuid())"} {
			rows, err := db.QueryContext(ctx, `EXPLAIN SELECT * FROM executions WHERE `+filter+cursor+
				` ORDER BY queued_at DESC, execution_id DESC LIMIT 51`)
			require.NoError(t, err)
			var plan string
			for rows.Next() {
				var line string
				require.NoError(t, rows.Scan(&line))
				plan += line + "\n"
			}
			require.NoError(t, rows.Err())
			require.Contains(t, plan, "Index Scan using "+index+" ", "%s%s:\n%s", filter, cursor, plan)
			require.NotContains(t, plan, "Sort", "%s%s: read in the index's order:\n%s", filter, cursor, plan)
		}
	}
}
