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
// composition root, and never writes to the streams but for dead letters.
package projections
