package projections_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// A rebuild interrupted at any point (in the middle of its replay, just before its swap, or
// dead with its build's schema left behind) leaves the live tables and checkpoint as the live
// runner keeps them, and the next rebuild starts again from the first message and ends with
// the rows of a runner that applied the whole stream.
func TestRebuildInterruptedRestarts(t *testing.T) {
	for _, tc := range []struct {
		name string
		// interrupt runs a rebuild of the executions projection that does not finish.
		interrupt func(t *testing.T, pool *pgxpool.Pool, cfg projections.RebuildConfig)
	}{
		{"in the replay", func(t *testing.T, _ *pgxpool.Pool, cfg projections.RebuildConfig) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := projections.Rebuild(ctx, projections.InterruptAfter(projections.NewExecutions(nil), 100, cancel), cfg)
			require.ErrorIs(t, err, context.Canceled)
		}},
		{"before the swap", func(t *testing.T, _ *pgxpool.Pool, cfg projections.RebuildConfig) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg.Progress = func(pr projections.Progress) {
				if pr.Phase == projections.PhaseCaughtUp {
					cancel()
				}
			}
			_, err := projections.Rebuild(ctx, projections.NewExecutions(nil), cfg)
			require.ErrorIs(t, err, context.Canceled)
		}},
		{"dead, its schema left", func(t *testing.T, pool *pgxpool.Pool, _ projections.RebuildConfig) {
			// As a process killed in its replay leaves it: a part of the rows and the build's
			// checkpoint past them.
			_, err := pool.Exec(context.Background(), `CREATE SCHEMA memmie_rebuild_executions;
				CREATE TABLE memmie_rebuild_executions.executions (LIKE public.executions INCLUDING ALL);
				INSERT INTO memmie_rebuild_executions.executions SELECT * FROM public.executions LIMIT 5;
				UPDATE memmie_rebuild_executions.executions SET status = 'left behind';
				CREATE TABLE memmie_rebuild_executions.projection_checkpoints (LIKE public.projection_checkpoints INCLUDING ALL);
				INSERT INTO memmie_rebuild_executions.projection_checkpoints (projection, stream, last_seq)
					VALUES ('executions', 'MEMMIE_EXECUTIONS', 40)`)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := setup(t)
			pool := pgtest.New(t)
			hs := histories(200)
			evs := interleave(hs)
			start(t, newRunner(t, projections.NewExecutions(nil), pool, js, projections.Config{}))
			last := publish(t, js, evs[:len(evs)/2])
			caughtUp(t, pool, "executions", last)
			before := dumpTable(t, pool, "executions")

			cfg := projections.RebuildConfig{Pool: pool, JS: js}
			tc.interrupt(t, pool, cfg)
			require.Equal(t, before, dumpTable(t, pool, "executions"), "the live rows are untouched")
			require.Equal(t, last, checkpoint(t, pool, "executions"), "the live checkpoint is untouched")

			last = publish(t, js, evs[len(evs)/2:])
			res, err := projections.Rebuild(context.Background(), projections.NewExecutions(nil), cfg)
			require.NoError(t, err)
			require.GreaterOrEqual(t, res.Seq, last)
			require.Equal(t, int(res.Seq), res.Events, "the rebuild counts every message of the stream")
			caughtUp(t, pool, "executions", last)

			ref := pgtest.New(t)
			start(t, newRunner(t, projections.NewExecutions(nil), ref, js, projections.Config{}))
			caughtUp(t, ref, "executions", last)
			require.Equal(t, dumpTable(t, ref, "executions"), dumpTable(t, pool, "executions"))
			var schemas int
			require.NoError(t, pool.QueryRow(context.Background(),
				`SELECT count(*) FROM pg_namespace WHERE nspname = 'memmie_rebuild_executions'`).Scan(&schemas))
			require.Zero(t, schemas, "the build's schema is dropped")
		})
	}
}
