package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/projections"
)

// definitionRows returns the definitions table as "<kind> <id> r<revision> current=… active=…
// <canonical>" lines, in key order, the canonical JSON compacted as the registry holds it.
func definitionRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT kind, id, revision, current, active, canonical::text
		FROM definitions ORDER BY kind, id, revision`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var (
			kind, id, canon string
			rev             int
			cur, act        bool
		)
		if err := r.Scan(&kind, &id, &rev, &cur, &act, &canon); err != nil {
			return "", err
		}
		var v any
		if err := json.Unmarshal([]byte(canon), &v); err != nil {
			return "", err
		}
		b, err := json.Marshal(v)
		return fmt.Sprintf("%s %s r%d current=%t active=%t %s", kind, id, rev, cur, act, b), err
	})
	require.NoError(t, err)
	return out
}

// registryRows is what definitionRows should be, from the registry's view.
func registryRows(t *testing.T, reg *registry.Registry) []string {
	t.Helper()
	var out []string
	for _, kind := range []definitions.Kind{definitions.KindProvider, definitions.KindSchema, definitions.KindWorkflow} {
		for _, cur := range reg.List(kind) {
			for _, rev := range reg.History(kind, cur.ID) {
				var v any
				require.NoError(t, json.Unmarshal(rev.Canonical, &v))
				b, err := json.Marshal(v)
				require.NoError(t, err)
				out = append(out, fmt.Sprintf("%s %s r%d current=%t active=%t %s", kind, rev.ID, rev.Revision,
					rev.Revision == cur.Revision, rev.Active, b))
			}
		}
	}
	return out
}

func definitionsCheckpoint(t *testing.T, pool *pgxpool.Pool) uint64 {
	t.Helper()
	var last int64
	err := pool.QueryRow(context.Background(), `SELECT last_seq FROM projection_checkpoints
		WHERE projection = 'definitions' AND stream = $1`, streams.Definitions).Scan(&last)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	return uint64(last)
}

// The definitions table holds what the registry holds, revision for revision, after
// registering, registering changed definitions and deactivating; a replay from the first
// message changes nothing.
func TestDefinitionsRowsMatchTheRegistry(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	reg, err := registry.New(js, registry.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })

	p := &counting{Projection: projections.NewDefinitions(nil)}
	run := start(t, newRunner(t, p, pool, js, projections.Config{BatchSize: 3}))
	caughtUp := func(what string) {
		t.Helper()
		require.Eventually(t, func() bool { return definitionsCheckpoint(t, pool) >= reg.Seq() }, waitFor, 10*time.Millisecond,
			"%s: the checkpoint never reached %d", what, reg.Seq())
		require.Equal(t, registryRows(t, reg), definitionRows(t, pool), what)
	}

	load := func() *definitions.Set {
		set, err := definitions.Load("../definitions")
		require.NoError(t, err)
		return set
	}
	_, err = reg.RegisterSet(ctx, load())
	require.NoError(t, err)
	caughtUp("registered")

	set := load()
	w := set.Workflow("blob_summary")
	w.Description = "changed"
	_, err = reg.Register(ctx, w)
	require.NoError(t, err)
	w.Description = "changed again"
	_, err = reg.Register(ctx, w)
	require.NoError(t, err)
	_, err = reg.RegisterSet(ctx, load()) // the original again: a revision 4
	require.NoError(t, err)
	caughtUp("re-registered")
	rows := definitionRows(t, pool)
	require.Contains(t, rows[len(rows)-1], "workflow ") // the table holds the workflows, too
	var revs int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM definitions WHERE kind = 'workflow' AND id = 'blob_summary'`).Scan(&revs))
	require.Equal(t, 4, revs)

	_, err = reg.Deactivate(ctx, definitions.KindProvider, "blob-summary")
	require.NoError(t, err)
	_, err = reg.Deactivate(ctx, definitions.KindWorkflow, "blob_summary")
	require.NoError(t, err)
	caughtUp("deactivated")
	var current, active bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT current, active FROM definitions
		WHERE kind = 'workflow' AND id = 'blob_summary' AND revision = 4`).Scan(&current, &active))
	require.True(t, current)
	require.False(t, active)

	// Registered again after its deactivation: revision 5, current and active.
	w.Description = "back"
	_, err = reg.Register(ctx, w)
	require.NoError(t, err)
	caughtUp("registered after a deactivation")

	// A replay from the first message: every event is applied again, and changes nothing.
	run.stop()
	before, applied := definitionRows(t, pool), p.count()
	_, err = pool.Exec(ctx, `DELETE FROM projection_checkpoints WHERE projection = 'definitions'`)
	require.NoError(t, err)
	start(t, newRunner(t, p, pool, js, projections.Config{BatchSize: 4}))
	caughtUp("replayed")
	require.Equal(t, 2*applied, p.count(), "the replay applied every event again")
	require.Equal(t, before, definitionRows(t, pool))
}
