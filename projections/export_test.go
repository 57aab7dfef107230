package projections

import "context"

// SetBeforeCommit sets the hook that runs between a batch's writes and its commit.
func (r *Runner) SetBeforeCommit(f func(ctx context.Context)) { r.beforeCommit = f }

// SetSnapshotEvery makes the projection snapshot every n versions.
func (p *Blobs) SetSnapshotEvery(n int64) { p.every = n }
