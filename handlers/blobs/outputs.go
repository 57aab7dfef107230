package blobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// OutputsFilter is the subject of the events the outputs consumer reads: every completed
// execution (the subject does not say which ones a blob triggered; the queued event does).
// Failed and cancelled executions write no delta.
const OutputsFilter = "memmie.executions.*.completed"

// handleOutput writes a completed execution's deltas on its blob (blob.Deltas), then
// publishes the created events of the blobs it derived. Each delta's id comes from the
// execution and its index, and the blob's state counts the execution's deltas, so an output
// delivered again, or whose write was cut short, writes each delta once. An output that
// cannot apply writes nothing and is recorded on the execution (events.DeltasRejected).
func (h *Handler) handleOutput(ctx context.Context, d consume.Delivery) consume.Outcome {
	// The completed event carries the trace of the blob event that triggered the execution.
	ctx, span := h.cfg.Tracer.Start(ctx, "execution deltas", d.Msg.Headers())
	defer span.End()
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
	if h.cfg.Tracer.On() {
		span.SetAttributes(tracing.BlobID.String(q.BlobID), tracing.ExecutionID.String(done.ExecutionID),
			tracing.WorkflowID.String(q.WorkflowID))
	}
	log := h.log.With("blob_id", q.BlobID, "execution_id", done.ExecutionID, "workflow_id", q.WorkflowID)
	res, out, ok := h.writeOutput(ctx, log, d, x, done.Run)
	if !ok {
		return out
	}
	if err := h.cfg.Hooks.At(ctx, faults.BlobsOutputDeltasAppended, x.ExecutionID); err != nil {
		return consume.Abandon()
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
func (h *Handler) writeOutput(ctx context.Context, log *slog.Logger, d consume.Delivery, x blob.Execution, run int) (res blob.Result, out consume.Outcome, ok bool) {
	store := h.cfg.Store
	hdr := tracing.Inject(ctx, nil)
	e, err := store.Get(ctx, x.BlobID)
	fresh, checked := false, false
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
			return blob.Result{}, h.reject(ctx, log, x, run, e.State.Version, rejection), false
		case err != nil:
			log.ErrorContext(ctx, "deltas of an execution", "err", err)
			return blob.Result{}, consume.DeadLetter(err.Error()), false
		}
		if res.Written == 0 && len(res.Deltas) > 0 && !checked {
			// None written yet: an earlier delivery may have judged the output on an older
			// state of the blob and rejected it. What was rejected is never written after.
			rejected, err := h.rejectedBefore(ctx, d, x.ExecutionID)
			if err != nil {
				return blob.Result{}, consume.Retry(err, 0), false
			}
			if rejected {
				log.InfoContext(ctx, "execution output rejected before: nothing written")
				return blob.Result{}, consume.Ack(), false
			}
			checked = true
		}
		if res.Written > 0 {
			log.InfoContext(ctx, "execution's deltas written before", "written", res.Written, "rest", len(res.Deltas))
		}
		// The first delta alone, then the rest as one chain: faults.BlobsOutputDeltaAppended
		// sits between them (a write cut short), for one more append call per execution.
		next, err := store.AppendHeader(ctx, e, hdr, res.Deltas[:min(1, len(res.Deltas))]...)
		if err == nil && len(res.Deltas) > 1 {
			if err := h.cfg.Hooks.At(ctx, faults.BlobsOutputDeltaAppended, x.ExecutionID); err != nil {
				return blob.Result{}, consume.Abandon(), false
			}
			_, err = store.AppendHeader(ctx, next, hdr, res.Deltas[1:]...)
		}
		if err == nil {
			if len(res.Deltas) > 0 {
				log.DebugContext(ctx, "execution's deltas appended", "deltas", len(res.Deltas), "version", res.Deltas[len(res.Deltas)-1].Version)
				if h.cfg.Observer != nil {
					h.cfg.Observer.OutputWritten(x, &e.State, res.Deltas[len(res.Deltas)-1])
				}
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

// maxRejectionReason bounds the reason a rejection records on the execution.
const maxRejectionReason = 4 << 10

// reject records on the execution that its output cannot apply to the blob at version: a
// deltas_rejected command on its inbox, whose id names the run, so that the execution records
// one rejection however often it is sent. It is not dead-lettered: nothing is lost (the
// execution holds the reason, and clients see it on memmie.executions.<id>.deltas_rejected),
// and a redrive could only be rejected again, or write on a blob that moved on.
func (h *Handler) reject(ctx context.Context, log *slog.Logger, x blob.Execution, run int, version int64, r *blob.Rejection) consume.Outcome {
	log.WarnContext(ctx, "execution output rejected: no delta written", "item", r.Item, "reason", r.Reason, "version", version)
	reason := r.Reason
	if len(reason) > maxRejectionReason {
		reason = strings.ToValidUTF8(reason[:maxRejectionReason], "") + "…"
	}
	ev := events.NewExecution(&events.DeltasRejected{ExecutionID: x.ExecutionID, Run: run, BlobID: x.BlobID,
		BlobVersion: version, Item: r.Item, Reason: reason}, events.SourceBlobs, h.cfg.Now())
	if err := inbox.Publish(ctx, h.js, ev); err != nil {
		return consume.Retry(fmt.Errorf("record the rejection of execution %s's deltas: %w", x.ExecutionID, err), 0)
	}
	return consume.Ack()
}

// errCommandWaits: a command of the execution waits in the inbox, perhaps its rejection.
var errCommandWaits = errors.New("a command of the execution waits in the inbox")

// rejectedBefore reports whether a rejection of the execution's output was recorded. On a
// delivery after the first, a command of the execution still in the inbox is waited for
// (errCommandWaits): an earlier delivery may have sent the rejection, which the history
// holds once the orchestrator has taken it (the inbox keeps a command until then).
func (h *Handler) rejectedBefore(ctx context.Context, d consume.Delivery, executionID string) (bool, error) {
	if d.Meta.NumDelivered > 1 {
		s, err := h.js.Stream(ctx, streams.Inbox)
		if err != nil {
			return false, fmt.Errorf("inbox of %s: %w", executionID, err)
		}
		// The partition token is a wildcard: the handler needs not know the partitions.
		_, err = s.GetLastMsgForSubject(ctx, "memmie.inbox.*."+executionID)
		switch {
		case err == nil:
			return false, fmt.Errorf("deltas of execution %s: %w", executionID, errCommandWaits)
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return false, fmt.Errorf("inbox of %s: %w", executionID, err)
		}
	}
	subject, err := events.ExecutionSubject(executionID, events.TypeDeltasRejected)
	if err != nil {
		return false, err
	}
	_, err = stream.LastBySubject(ctx, h.js, h.cfg.Executions, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read the deltas rejection of %s: %w", executionID, err)
	}
	return true, nil
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
	tracing.Inject(ctx, msg.Header)
	if _, err := h.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(h.cfg.Blobs)); err != nil {
		return fmt.Errorf("publish %s: %w", ev.Subject, err)
	}
	return nil
}
