package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// Page sizes of HistoryPage.
const (
	DefaultHistoryPage = 100
	MaxHistoryPage     = 1000
)

// HistoryPage is one page of an execution's events, in stream order.
type HistoryPage struct {
	Events []events.Event
	// Next is the stream sequence to read on after, when the history held more events than
	// the page when it was read; 0 when the page reaches its end.
	Next uint64
}

// HistoryPage returns up to limit events of an execution that follow stream sequence after (0:
// from the first). limit defaults to DefaultHistoryPage and is at most MaxHistoryPage. It reads
// about a page, with an ordered consumer on the execution's subjects that starts after the
// cursor and pulls a page at a time; timer schedules, which are not events, are skipped.
// ErrNotFound when the execution has no events.
func (e *Engine) HistoryPage(ctx context.Context, id string, after uint64, limit int) (HistoryPage, error) {
	if err := events.ValidToken(id); err != nil {
		return HistoryPage{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if limit <= 0 {
		limit = DefaultHistoryPage
	}
	limit = min(limit, MaxHistoryPage)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stream.DefaultLoadTimeout)
		defer cancel()
	}
	filter := events.ExecutionFilter(id)
	// The last sequence ends the read: events appended meanwhile wait for the next page.
	last, err := stream.LastBySubject(ctx, e.js, streams.Executions, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return HistoryPage{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return HistoryPage{}, fmt.Errorf("history of %s: %w", id, err)
	}
	if last.Sequence <= after {
		return HistoryPage{Events: []events.Event{}}, nil
	}
	page, err := e.readPage(ctx, filter, after, last.Sequence, limit)
	if err != nil {
		return HistoryPage{}, fmt.Errorf("history of %s after %d: %w", id, after, err)
	}
	return page, nil
}

func (e *Engine) readPage(ctx context.Context, filter string, after, lastSeq uint64, limit int) (HistoryPage, error) {
	cons, err := e.js.OrderedConsumer(ctx, streams.Executions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
		// A consumer left behind (the delete below failed) goes away on its own.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return HistoryPage{}, err
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = e.js.DeleteConsumer(delCtx, streams.Executions, info.Name)
			cancel()
		}
	}()
	// Pulls of at most a page: the client buffers about a page, not the history. A short
	// expiry brings heartbeats, so that a consumer lost in a server restart is recreated
	// within seconds.
	it, err := cons.Messages(jetstream.PullMaxMessages(limit), jetstream.PullExpiry(2*time.Second))
	if err != nil {
		return HistoryPage{}, err
	}
	defer it.Stop()

	page := HistoryPage{Events: make([]events.Event, 0, min(limit, int(lastSeq-after)))}
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return HistoryPage{}, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return HistoryPage{}, err
		}
		if _, tail, err := events.ParseExecutionSubject(msg.Subject()); err != nil || !strings.HasPrefix(tail, "schedule.") {
			ev, err := events.Decode(msg.Data())
			if err != nil {
				return HistoryPage{}, fmt.Errorf("message %d (%s): %w", md.Sequence.Stream, msg.Subject(), err)
			}
			page.Events = append(page.Events, ev)
		}
		// NumPending 0 ends the read even if lastSeq was deleted meanwhile.
		if md.Sequence.Stream >= lastSeq || md.NumPending == 0 {
			return page, nil
		}
		if len(page.Events) == limit {
			page.Next = md.Sequence.Stream
			return page, nil
		}
	}
}

// ExecutionSeq returns the stream sequence of an execution's last message, as the stream
// leader holds it: every event recorded before the call is at or below it. ErrNotFound when
// the execution has no events.
func (e *Engine) ExecutionSeq(ctx context.Context, id string) (uint64, error) {
	if err := events.ValidToken(id); err != nil {
		return 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	last, err := stream.LeaderLastBySubject(ctx, e.js, streams.Executions, events.ExecutionFilter(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return 0, fmt.Errorf("last event of %s: %w", id, err)
	}
	return last.Sequence, nil
}
