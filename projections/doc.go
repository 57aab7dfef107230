// Package projections folds the streams into the Postgres tables that answer queries (see
// migrations/): each projection is a small unit that turns a batch of decoded events into rows,
// and a Runner feeds it from its stream, writing the rows and the projection's checkpoint in one
// transaction.
//
//	r, err := projections.NewRunner(projections.NewExecutions(log), projections.Config{Pool: pool, JS: js})
//	go r.Run(ctx) // returns when ctx is done
//	st := r.Stats() // its last committed checkpoint, for the metrics of its lag
//
// The tables are views, never the source of truth: a projection may be replayed from the first
// message at any time and must end with the same rows. It never imports a handler or the
// composition root, and never writes to the streams but for dead letters. Each table is written
// by one projection alone: the table named after it, or those its Tables method names.
//
// # Rebuilding
//
// Rebuild replays a projection's stream from the first message into fresh tables while the
// live ones keep serving and its live Runner (in this process or another) keeps writing:
//
//	res, err := projections.Rebuild(ctx, projections.NewExecutions(log), projections.RebuildConfig{Pool: pool, JS: js})
//
// How it goes, and why the live runner cannot go wrong meanwhile:
//
//   - It builds in a schema of its own, memmie_rebuild_<name>, that holds an empty copy of each
//     of the projection's tables (LIKE the live one, its indexes made under the same names) and
//     a projection_checkpoints of its own. That schema comes first in the search_path of the
//     rebuild's connection, so that the projection's SQL, which names its tables without a
//     schema, and the Runner's checkpoint writes go there unchanged.
//   - It replays the stream as it was when it began. The projections of this package, blobs
//     apart, fold the whole replay in memory (the same folds as Apply: the tables hold one row per execution or
//     attempt, and so does the memory, until the replay ends), decoding on every CPU and passing
//     over undecoded the event types they do not fold (the server does not even deliver those
//     whose subjects have another number of tokens: one consumer filter), and write it with
//     COPY into the fresh tables before making their indexes, with the build's checkpoint in
//     the same transaction. Another projection (blobs: its documents are the
//     size of the blobs), or a replay with a row Postgres refuses (which must be
//     dead-lettered), goes in batches through Apply, as a Runner does.
//   - It catches up the tail written meanwhile, in batches through Apply, until it is within
//     RebuildConfig.SwapLag of the stream's end.
//   - The swap is one transaction. It locks the live checkpoint row first (SELECT ... FOR
//     UPDATE), applies the rest of the tail up to the stream's end (never short of the live
//     checkpoint), locks the live tables, drops them, moves the fresh ones into their schema
//     and sets the live checkpoint to where the fresh tables are. Queries wait for that
//     transaction only, then read the fresh tables.
//   - Every write transaction of a Runner begins by locking the same row and comparing it with
//     the checkpoint it holds in memory: a write that comes during the swap waits for it, then
//     finds the checkpoint moved and starts again from it, so that no statement of it runs
//     against a table the swap dropped and no event is applied twice.
//   - One rebuild of a projection at a time: a second one, in any process, fails with
//     ErrRebuildRunning (an advisory lock). A rebuild that dies or is cancelled, at any point,
//     leaves the live tables and checkpoint untouched until the swap commits, and its schema,
//     which the next rebuild of the projection drops: that one starts again from the first
//     message (TestRebuildInterruptedRestarts).
//
// The fresh tables are owned by the rebuilding role and do not carry the live tables' grants.
package projections
