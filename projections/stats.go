package projections

import (
	"sync/atomic"
	"time"
)

// Stats is what a runner has written, for the metrics of its lag.
type Stats struct {
	// Projection and Stream name the projection and the stream it consumes.
	Projection, Stream string
	// Applied is the stream sequence of the runner's last committed checkpoint, 0 when this
	// runner has committed none (it stands by, or has had nothing to write since it started).
	Applied uint64
	// CommittedAt is when it committed that checkpoint; zero with Applied.
	CommittedAt time.Time
}

// runnerStats holds a runner's Stats; written once a commit, read at any time.
type runnerStats struct {
	applied   atomic.Uint64
	committed atomic.Int64 // Unix nanoseconds
}

// commit records a committed checkpoint.
func (s *runnerStats) commit(seq uint64, at time.Time) {
	// The time first: a reader that sees the new sequence sees a time at least as new.
	s.committed.Store(at.UnixNano())
	s.applied.Store(seq)
}

// Stats returns what the runner has committed. It is safe to call at any time, from any
// goroutine.
func (r *Runner) Stats() Stats {
	st := Stats{Projection: r.p.Name(), Stream: r.p.Stream(), Applied: r.stats.applied.Load()}
	if ns := r.stats.committed.Load(); ns != 0 && st.Applied != 0 {
		st.CommittedAt = time.Unix(0, ns)
	}
	return st
}
