package projections

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
)

// Event is a decoded event with its place in its stream.
type Event struct {
	events.Event
	// Seq is the event's stream sequence.
	Seq uint64
}

// Projection folds the events of one stream into rows.
type Projection interface {
	// Name names the projection in projection_checkpoints and in its advisory lock.
	Name() string
	// Stream is the stream it consumes.
	Stream() string
	// Apply folds a batch, in stream order, into rows within tx. The Runner passes only events
	// after the checkpoint, but Apply must still be idempotent: applying an event a second time
	// changes nothing.
	Apply(ctx context.Context, tx pgx.Tx, batch []Event) error
}

// orDiscard is log, or a logger that discards when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
