package blobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// OutputsFilter is the subject of the events the outputs consumer reads: every completed
// execution (the subject does not say which ones a blob triggered; the queued event does).
// Failed and cancelled executions write no delta.
const OutputsFilter = "memmie.executions.*.completed"

// handleOutput writes a completed execution's deltas on its blob (blob.Deltas), then
// publishes the created events of the blobs it derived. Each delta's id comes from the
// execution and its index, and the blob's state counts the execution's deltas, so an output
// delivered again, or whose write was cut short, writes each delta once.
func (h *Handler) handleOutput(ctx context.Context, d consume.Delivery) consume.Outcome {
	ev, err := events.Decode(d.Msg.Data())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	done, ok := ev.Data.(*events.ExecutionCompleted)
	if !ok {
		return consume.DeadLetter(fmt.Sprintf("%s is not %s", ev.Type, events.TypeExecutionCompleted))
	}
	q, err := h.queued(ctx, done.ExecutionID)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return consume.DeadLetter(fmt.Sprintf("execution %s completed without a queued event", done.ExecutionID))
	case errors.Is(err, errUnreadable):
		return consume.DeadLetter(err.Error())
	case err != nil:
		return consume.Retry(err, 0)
	}
	if q.BlobID == "" {
		return consume.Ack() // not triggered by a blob
	}
	x := blob.Execution{
		ExecutionID:      done.ExecutionID,
		WorkflowID:       q.WorkflowID,
		WorkflowRevision: q.WorkflowRevision,
		ProviderID:       q.ProviderID,
		BlobID:           q.BlobID,
		BaseVersion:      q.BaseVersion,
		SourceEventID:    q.SourceEventID,
		Output:           done.Output,
	}
	log := h.log.With("blob_id", q.BlobID, "execution_id", done.ExecutionID, "workflow_id", q.WorkflowID)
	res, out, ok := h.writeOutput(ctx, log, x)
	if !ok {
		return out
	}
	for _, c := range res.Created {
		if err := h.publishCreated(ctx, c); err != nil {
			return consume.Retry(err, 0) // the deltas are written: the delivery again writes none
		}
	}
	return consume.Ack()
}

var errUnreadable = errors.New("unreadable queued event")

// queued reads an execution's queued event: the only message on its subject, never changed.
func (h *Handler) queued(ctx context.Context, executionID string) (*events.ExecutionQueued, error) {
	subject, err := events.ExecutionSubject(executionID, events.TypeExecutionQueued)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	m, err := stream.LastBySubject(ctx, h.js, h.cfg.Executions, subject)
	if err != nil {
		return nil, fmt.Errorf("read the queued event of %s: %w", executionID, err)
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		return nil, fmt.Errorf("%w of %s: %v", errUnreadable, executionID, err)
	}
	q, ok := ev.Data.(*events.ExecutionQueued)
	if !ok {
		return nil, fmt.Errorf("%w of %s: found %s", errUnreadable, executionID, ev.Type)
	}
	return q, nil
}

// writeOutput appends the execution's deltas not yet on the blob. ok is false when out
// settles the event.
func (h *Handler) writeOutput(ctx context.Context, log *slog.Logger, x blob.Execution) (res blob.Result, out consume.Outcome, ok bool) {
	store := h.cfg.Store
	e, err := store.Get(ctx, x.BlobID)
	fresh := false
	for attempt := 1; ; attempt++ {
		if err != nil {
			return blob.Result{}, loadOutcome(err), false
		}
		res, err := blob.Deltas(e.State, x, h.cfg.Now())
		var rejection *blob.Rejection
		switch {
		case err != nil && !fresh:
			// A cached state may be behind another process's appends: judge on the stream's.
			e, err = store.Fresh(ctx, x.BlobID)
			fresh = true
			continue
		case errors.As(err, &rejection):
			// The execution's history should show this; only the orchestrator writes it, so
			// for now the output is dead-lettered with the reason.
			log.Warn("execution output rejected: no delta written", "item", rejection.Item, "reason", rejection.Reason)
			return blob.Result{}, consume.DeadLetter(err.Error()), false
		case err != nil:
			log.Error("deltas of an execution", "err", err)
			return blob.Result{}, consume.DeadLetter(err.Error()), false
		}
		if res.Written > 0 {
			log.Info("execution's deltas written before", "written", res.Written, "rest", len(res.Deltas))
		}
		if _, err := store.Append(ctx, e, res.Deltas...); err == nil {
			if len(res.Deltas) > 0 {
				log.Debug("execution's deltas appended", "deltas", len(res.Deltas), "version", res.Deltas[len(res.Deltas)-1].Version)
			}
			return res, consume.Outcome{}, true
		} else if !errors.Is(err, stream.ErrConflict) {
			return blob.Result{}, consume.Retry(err, 0), false
		} else if attempt >= h.cfg.MaxConflicts {
			return blob.Result{}, consume.Retry(fmt.Errorf("after %d conflicting appends: %w", attempt, err), 0), false
		}
		// Another writer appended first (perhaps after a prefix of these deltas): catch up
		// and decide again; the state knows how many of the execution's deltas it holds.
		e, err = store.Fresh(ctx, x.BlobID)
		fresh = true
	}
}

// publishCreated publishes a derived blob's created event on memmie.blobs.<id>.created, with
// Nats-Msg-Id its id: the blob events consumer records it as the derived blob's version 1. A
// publish again is a duplicate of the same event (its envelope id).
func (h *Handler) publishCreated(ctx context.Context, ev events.Event) error {
	data, err := events.Marshal(ev)
	if err != nil {
		return fmt.Errorf("created event of derived blob %s: %w", ev.Subject, err)
	}
	msg := nats.NewMsg(ev.Subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if _, err := h.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(h.cfg.Blobs)); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Subject, err)
	}
	return nil
}
