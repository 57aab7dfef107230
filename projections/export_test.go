package projections

import "context"

// SetBeforeCommit sets the hook that runs between a batch's writes and its commit.
func (r *Runner) SetBeforeCommit(f func(ctx context.Context)) { r.beforeCommit = f }
