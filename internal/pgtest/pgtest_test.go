package pgtest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pgtest"
)

func TestEachTestHasADatabaseOfItsOwn(t *testing.T) {
	ctx := context.Background()
	var names []string
	for range 2 {
		t.Run("db", func(t *testing.T) {
			pool := pgtest.New(t)
			var name string
			require.NoError(t, pool.QueryRow(ctx, "SELECT current_database()").Scan(&name))
			names = append(names, name)
			// Migrated: the projections' tables are there, empty.
			var n int
			require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM executions").Scan(&n))
			require.Zero(t, n)
			_, err := pool.Exec(ctx, "INSERT INTO projection_checkpoints (projection, stream, last_seq) VALUES ('p', 's', 1)")
			require.NoError(t, err)
		})
	}
	require.Len(t, names, 2)
	require.NotEqual(t, names[0], names[1])
}

func TestEmptyURLIsNotMigrated(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t) // the template exists already; an empty database still has no tables
	_ = pool
	conn := connect(t, pgtest.EmptyURL(t))
	var n int
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&n))
	require.Zero(t, n)
}
