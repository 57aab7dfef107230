package projections

import (
	"context"

	"github.com/memmie/memmie/events"
)

// SetBeforeCommit sets the hook that runs between a batch's writes and its commit.
func (r *Runner) SetBeforeCommit(f func(ctx context.Context)) { r.beforeCommit = f }

// SetSnapshotEvery makes the projection snapshot every n versions.
func (p *Blobs) SetSnapshotEvery(n int64) { p.every = n }

// InterruptAfter returns p, whose Rebuild's fast path must exist, with a fold that calls stop
// once it folded n events: a rebuild interrupted in the middle of its replay.
func InterruptAfter(p Projection, n int, stop func()) Projection {
	return &interrupting{Projection: p, n: n, stop: stop}
}

type interrupting struct {
	Projection
	n    int
	stop func()
}

func (i *interrupting) folds(t events.Type) bool { return i.Projection.(typed).folds(t) }

func (i *interrupting) newBulk() bulkFold {
	return &interruptedFold{bulkFold: i.Projection.(bulkFolder).newBulk(), left: i.n, stop: i.stop}
}

type interruptedFold struct {
	bulkFold
	left int
	stop func()
}

func (f *interruptedFold) fold(ev Event) {
	f.bulkFold.fold(ev)
	if f.left--; f.left == 0 {
		f.stop()
	}
}
