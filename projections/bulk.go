package projections

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
)

// bulkFolder is a projection with a fast path for Rebuild's replay: it folds the whole
// stream in memory, then writes its rows with COPY into the fresh tables, which are empty and
// have no index yet. The rows must equal those Apply makes: the folds are the same.
type bulkFolder interface {
	newBulk() bulkFold
}

// bulkFold holds the rows of a replay in memory.
type bulkFold interface {
	// fold folds an event, in stream order. An event that cannot make a row is left out,
	// loudly, as Apply leaves it out.
	fold(ev Event)
	// copy writes the rows with COPY into the tables that tx's search path names.
	copy(ctx context.Context, tx pgx.Tx) error
}

// typed is a projection that folds the events of some types only. A replay's reader passes
// over, undecoded, a message whose subject names another type of execution event: decoding is
// most of a replay's time. (The live runner decodes every message, and dead-letters those that
// do not decode; a message passed over here cannot change a row.)
type typed interface {
	folds(t events.Type) bool
}

// skipper returns the test of whether the replay of p may pass over the message on a subject
// undecoded: a subject memmie.executions.<id>.<tail> whose tail names a type p does not fold.
func skipper(p Projection) func(subject string) bool {
	tp, ok := p.(typed)
	if !ok {
		return func(string) bool { return false }
	}
	const prefix = "memmie.executions."
	skip := map[string]bool{} // by subject tail, as ExecutionSubject makes them
	for t, tail := range executionTails() {
		skip[tail] = !tp.folds(t)
	}
	return func(subject string) bool {
		rest, ok := strings.CutPrefix(subject, prefix)
		if !ok {
			return false
		}
		i := strings.IndexByte(rest, '.')
		return i > 0 && skip[rest[i+1:]]
	}
}

// executionTails are the subject tails of the execution event types (step.scheduled for
// memmie.execution.step.scheduled), by type.
func executionTails() map[events.Type]string {
	const prefix = "memmie.executions.x."
	out := map[events.Type]string{}
	for _, t := range events.Types() {
		if !t.IsExecution() {
			continue
		}
		if subject, err := events.ExecutionSubject("x", t); err == nil && strings.HasPrefix(subject, prefix) {
			out[t] = strings.TrimPrefix(subject, prefix)
		}
	}
	return out
}

// replayFilter is the subject filter of a replay of p, "" for the whole stream: for a typed
// projection whose folded types' tails all have the same number of tokens n (one for the
// executions and queued_executions projections, two for execution_steps),
// memmie.executions.<id> and n tokens. The server passes over the other subjects without
// delivering them: tails of other lengths, of types p does not fold, or no type at all (a
// message on those the live runner dead-letters; the replay does not read it). One filter:
// the server's file store walks a consumer of several filters far more slowly (measured:
// three filters took 70 times one's time over 12,000 messages of 1,000 executions).
func replayFilter(p Projection) string {
	tp, ok := p.(typed)
	if !ok {
		return ""
	}
	tokens := 0
	for t, tail := range executionTails() {
		if !tp.folds(t) {
			continue
		}
		n := strings.Count(tail, ".") + 1
		if tokens != 0 && n != tokens {
			return ""
		}
		tokens = n
	}
	if tokens == 0 {
		return ""
	}
	return "memmie.executions.*" + strings.Repeat(".*", tokens)
}

// rowsOf holds folded rows by key, in the order they were made.
type rowsOf[K comparable, R any] struct {
	rows map[K]*R
	keys []K
}

func newRowsOf[K comparable, R any]() rowsOf[K, R] { return rowsOf[K, R]{rows: map[K]*R{}} }

// fold sets the row of k to what f makes of it.
func (b *rowsOf[K, R]) fold(k K, f func(row *R) (*R, bool, error)) error {
	old := b.rows[k]
	row, changed, err := f(old)
	if err != nil || !changed {
		return err
	}
	if old == nil {
		b.keys = append(b.keys, k)
	}
	b.rows[k] = row
	return nil
}

// copyRows COPYs the rows, one []any of columns each, into table. A uuid goes as a [16]byte:
// a uuid.UUID would go through its driver.Valuer, as text.
func copyRows[K comparable, R any](ctx context.Context, tx pgx.Tx, table string, columns string, b *rowsOf[K, R],
	values func(*R) ([]any, error)) error {
	_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, splitColumns(columns), pgx.CopyFromSlice(len(b.keys), func(i int) ([]any, error) {
		return values(b.rows[b.keys[i]])
	}))
	if err != nil {
		return fmt.Errorf("copy %s: %w", table, err)
	}
	return nil
}

// splitColumns splits a list of columns as the projections write them ("a, b,\n\tc").
func splitColumns(s string) []string {
	var out []string
	for _, c := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

type executionsBulk struct {
	log *slog.Logger
	rowsOf[uuid.UUID, execution]
}

func (p *Executions) newBulk() bulkFold {
	return &executionsBulk{log: p.log, rowsOf: newRowsOf[uuid.UUID, execution]()}
}

// folds lists the types foldExecution folds.
func (*Executions) folds(t events.Type) bool {
	switch t {
	case events.TypeExecutionQueued, events.TypeExecutionStarted, events.TypeExecutionCompensating,
		events.TypeExecutionCompleted, events.TypeExecutionFailed, events.TypeExecutionRetryScheduled,
		events.TypeExecutionCancelled, events.TypeExecutionRequeued, events.TypeDeltasRejected:
		return true
	}
	return false
}

func (b *executionsBulk) fold(ev Event) {
	id, ok := executionOf(ev)
	if !ok {
		return
	}
	if _, known := b.rows[id]; !known && ev.Type != events.TypeExecutionQueued {
		b.log.Warn("executions projection: event of an execution without a queued event", "event_id", ev.ID, "seq", ev.Seq)
	}
	if err := b.rowsOf.fold(id, func(row *execution) (*execution, bool, error) { return foldExecution(row, ev) }); err != nil {
		b.log.Error("executions projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
	}
}

func (b *executionsBulk) copy(ctx context.Context, tx pgx.Tx) error {
	return copyRows(ctx, tx, "executions", executionColumns, &b.rowsOf, func(r *execution) ([]any, error) {
		return []any{[16]byte(r.ID), r.WorkflowID, int32(r.WorkflowRevision), r.Status, int32(r.Priority), jsonb(r.Input),
			jsonb(r.Output), jsonb(r.Error), int32(r.Run), text([]byte(r.ProviderID)), text([]byte(r.BlobID)),
			r.QueuedAt, timePtr(r.StartedAt), timePtr(r.EndedAt), r.UpdatedAt, jsonb(r.DeltasRejected)}, nil
	})
}

type queuedBulk struct {
	log *slog.Logger
	rowsOf[uuid.UUID, queueRow]
}

func (p *Queued) newBulk() bulkFold {
	return &queuedBulk{log: p.log, rowsOf: newRowsOf[uuid.UUID, queueRow]()}
}

// folds lists the types foldQueued folds.
func (*Queued) folds(t events.Type) bool {
	switch t {
	case events.TypeExecutionQueued, events.TypeExecutionStarted, events.TypeExecutionCompleted,
		events.TypeExecutionFailed, events.TypeExecutionRetryScheduled, events.TypeExecutionCancelled,
		events.TypeExecutionRequeued:
		return true
	}
	return false
}

func (b *queuedBulk) fold(ev Event) {
	id, ok := executionOf(ev)
	if !ok {
		return
	}
	if err := b.rowsOf.fold(queuedRowID(id), func(row *queueRow) (*queueRow, bool, error) { return foldQueued(row, ev) }); err != nil {
		b.log.Error("queued_executions projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
	}
}

func (b *queuedBulk) copy(ctx context.Context, tx pgx.Tx) error {
	return copyRows(ctx, tx, "queued_executions", queuedColumns, &b.rowsOf, func(r *queueRow) ([]any, error) {
		m, err := r.metadata()
		if err != nil {
			return nil, fmt.Errorf("queued execution %s metadata: %w", r.ExecutionID, err)
		}
		return []any{[16]byte(r.ID), [16]byte(r.ExecutionID), r.WorkflowID, int32(r.WorkflowRevision), int32(r.Priority), r.Status,
			int32(r.RetryCount), int32(r.MaxRetries), text([]byte(r.ProviderID)), text([]byte(r.Trigger)),
			text([]byte(r.BlobID)), r.QueuedAt, r.CreatedAt, r.UpdatedAt, string(m)}, nil
	})
}

type stepsBulk struct {
	log *slog.Logger
	rowsOf[stepKey, step]
}

func (p *Steps) newBulk() bulkFold {
	return &stepsBulk{log: p.log, rowsOf: newRowsOf[stepKey, step]()}
}

// folds lists the types stepOf keys.
func (*Steps) folds(t events.Type) bool {
	switch t {
	case events.TypeStepScheduled, events.TypeStepReported, events.TypeStepSucceeded, events.TypeStepFailed,
		events.TypeStepRetryScheduled, events.TypeStepSkipped, events.TypeCompensationScheduled,
		events.TypeCompensationReported, events.TypeCompensationSucceeded, events.TypeCompensationFailed,
		events.TypeCompensationRetryScheduled:
		return true
	}
	return false
}

func (b *stepsBulk) fold(ev Event) {
	k, ok := stepOf(ev)
	if !ok {
		return
	}
	if err := b.rowsOf.fold(k, func(row *step) (*step, bool, error) { return foldStep(row, k, ev) }); err != nil {
		b.log.Error("execution_steps projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
	}
}

func (b *stepsBulk) copy(ctx context.Context, tx pgx.Tx) error {
	return copyRows(ctx, tx, "execution_steps", stepColumns, &b.rowsOf, func(r *step) ([]any, error) {
		return []any{[16]byte(r.ExecutionID), int32(r.Run), r.StepID, int32(r.Attempt), r.Compensation, r.Status,
			jsonb(r.Request), jsonb(r.Output), jsonb(r.Error), r.DurationMS, timePtr(r.StartedAt), timePtr(r.EndedAt)}, nil
	})
}

// jsonb is raw JSON for a jsonb column, nil for NULL.
func jsonb(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}
