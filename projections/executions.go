package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	core "github.com/memmie/memmie/internal/core/execution"
)

// Executions is the executions projection: one row per execution in the executions table, as of
// its latest run, folded from MEMMIE_EXECUTIONS. Step events leave the row alone.
type Executions struct {
	log *slog.Logger
}

// NewExecutions returns the executions projection. A nil log discards.
func NewExecutions(log *slog.Logger) *Executions {
	return &Executions{log: orDiscard(log)}
}

func (*Executions) Name() string   { return "executions" }
func (*Executions) Stream() string { return streams.Executions }

// execution is a row of the executions table. JSON columns hold raw JSON, nil for NULL; a zero
// time is NULL.
type execution struct {
	ID               uuid.UUID
	WorkflowID       string
	WorkflowRevision int
	Status           string
	Priority         int
	Input            []byte
	Output           []byte
	Error            []byte
	Run              int
	ProviderID       string
	BlobID           string
	QueuedAt         time.Time
	StartedAt        time.Time
	EndedAt          time.Time
	UpdatedAt        time.Time
	// DeltasRejected is a core DeltasRejection as JSON (the stream's answer's
	// deltas_rejected), nil when nothing was rejected.
	DeltasRejected []byte
}

func (r *execution) equal(o *execution) bool {
	return r.ID == o.ID && r.WorkflowID == o.WorkflowID && r.WorkflowRevision == o.WorkflowRevision &&
		r.Status == o.Status && r.Priority == o.Priority && bytes.Equal(r.Input, o.Input) &&
		bytes.Equal(r.Output, o.Output) && bytes.Equal(r.Error, o.Error) &&
		bytes.Equal(r.DeltasRejected, o.DeltasRejected) && r.Run == o.Run &&
		r.ProviderID == o.ProviderID && r.BlobID == o.BlobID && r.QueuedAt.Equal(o.QueuedAt) &&
		r.StartedAt.Equal(o.StartedAt) && r.EndedAt.Equal(o.EndedAt) && r.UpdatedAt.Equal(o.UpdatedAt)
}

// The statuses, as the core names them (internal/core/execution.Status).
const (
	statusQueued         = "queued"
	statusRunning        = "running"
	statusCompensating   = "compensating"
	statusRetryScheduled = "retry_scheduled"
	statusCompleted      = "completed"
	statusFailed         = "failed"
	statusCancelled      = "cancelled"
)

// foldExecution folds one event into row, which is nil when the execution has no row yet. It
// returns the row after the event and whether the event changed it. It is pure, and
// idempotent: the guards follow the core's state machine (an event that does not apply to the
// row's status and run is one the core records as stale), so that an event folded a second time
// is refused or sets what it set already, and changes nothing.
func foldExecution(row *execution, ev Event) (*execution, bool, error) {
	if q, ok := ev.Data.(*events.ExecutionQueued); ok {
		if row != nil {
			return row, false, nil
		}
		id, err := uuid.Parse(q.ExecutionID)
		if err != nil {
			return nil, false, fmt.Errorf("execution id %q: %w", q.ExecutionID, err)
		}
		input, err := rawJSON(q.Input)
		if err != nil {
			return nil, false, fmt.Errorf("execution %s input: %w", q.ExecutionID, err)
		}
		return &execution{
			ID: id, WorkflowID: q.WorkflowID, WorkflowRevision: q.WorkflowRevision,
			Status: statusQueued, Priority: q.Priority, Input: input, Run: 1,
			ProviderID: q.ProviderID, BlobID: q.BlobID,
			QueuedAt: ev.Time, UpdatedAt: ev.Time,
		}, true, nil
	}
	if row == nil {
		return nil, false, nil
	}
	r := *row
	switch d := ev.Data.(type) {
	case *events.ExecutionStarted:
		if r.Status != statusQueued || d.Run != r.Run {
			return row, false, nil
		}
		r.Status, r.StartedAt, r.EndedAt = statusRunning, ev.Time, time.Time{}
	case *events.ExecutionCompensating:
		if r.Status != statusRunning || d.Run != r.Run {
			return row, false, nil
		}
		r.Status = statusCompensating
	case *events.ExecutionCompleted:
		if d.Run != r.Run {
			return row, false, nil
		}
		out, err := rawJSON(d.Output)
		if err != nil {
			return nil, false, fmt.Errorf("execution %s output: %w", d.ExecutionID, err)
		}
		r.Status, r.Output, r.Error, r.EndedAt = statusCompleted, out, nil, ev.Time
	case *events.ExecutionFailed:
		if d.Run != r.Run {
			return row, false, nil
		}
		e, err := rawJSON(d.Error)
		if err != nil {
			return nil, false, fmt.Errorf("execution %s error: %w", d.ExecutionID, err)
		}
		r.Status, r.Error, r.EndedAt = statusFailed, e, ev.Time
	case *events.ExecutionRetryScheduled:
		if d.Run != r.Run {
			return row, false, nil
		}
		e, err := rawJSON(d.Error)
		if err != nil {
			return nil, false, fmt.Errorf("execution %s error: %w", d.ExecutionID, err)
		}
		r.Status, r.Error = statusRetryScheduled, e
	case *events.ExecutionCancelled:
		// A cancel during a retry's wait ends the run that waited to be queued.
		if d.Run != r.Run && (r.Status != statusRetryScheduled || d.Run != r.Run+1) {
			return row, false, nil
		}
		r.Status, r.Run, r.EndedAt = statusCancelled, d.Run, ev.Time
	case *events.ExecutionRequeued:
		if d.Run != r.Run+1 {
			return row, false, nil
		}
		// The last run's error stays until the new run ends: it says why it was re-run.
		r.Status, r.Run, r.Output = statusQueued, d.Run, nil
		r.StartedAt, r.EndedAt = time.Time{}, time.Time{}
		if d.Priority != nil {
			r.Priority = *d.Priority
		}
	case *events.DeltasRejected:
		// As the core records it: once, on the completed run.
		if r.Status != statusCompleted || d.Run != r.Run || r.DeltasRejected != nil {
			return row, false, nil
		}
		rej, err := json.Marshal(core.DeltasRejection{BlobID: d.BlobID, BlobVersion: d.BlobVersion,
			Item: d.Item, Reason: d.Reason, RejectedAt: ev.Time})
		if err != nil {
			return nil, false, fmt.Errorf("execution %s deltas rejected: %w", d.ExecutionID, err)
		}
		r.DeltasRejected = rej
	default:
		return row, false, nil
	}
	r.UpdatedAt = ev.Time
	if r.equal(row) {
		return row, false, nil
	}
	return &r, true, nil
}

func rawJSON(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// Apply loads the rows of the batch's executions, folds the batch into them and upserts the
// rows it changed in one INSERT ... ON CONFLICT over arrays.
func (p *Executions) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	ids := make([]uuid.UUID, 0, len(batch))
	seen := make(map[uuid.UUID]bool, len(batch))
	for _, ev := range batch {
		id, ok := executionOf(ev)
		if ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := loadExecutions(ctx, tx, ids)
	if err != nil {
		return err
	}
	var changed []uuid.UUID
	dirty := make(map[uuid.UUID]bool)
	for _, ev := range batch {
		id, ok := executionOf(ev)
		if !ok {
			continue
		}
		row, ch, err := foldExecution(rows[id], ev)
		if err != nil {
			// An event that cannot make a row (JSON that does not encode) would stop the
			// projection forever: leave it out, loudly.
			p.log.Error("executions projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
			continue
		}
		if row == nil && ev.Type != events.TypeExecutionQueued {
			p.log.Warn("executions projection: event of an execution without a queued event", "event_id", ev.ID, "seq", ev.Seq)
		}
		if ch {
			rows[id] = row
			if !dirty[id] {
				dirty[id] = true
				changed = append(changed, id)
			}
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return upsertExecutions(ctx, tx, rows, changed)
}

// executionOf returns the execution an event belongs to, when the projection can hold it.
func executionOf(ev Event) (uuid.UUID, bool) {
	s := ev.ExecutionID()
	if s == "" {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(s)
	return id, err == nil
}

const executionColumns = `execution_id, workflow_id, workflow_revision, status, priority, input, output, error,
	run, provider_id, blob_id, queued_at, started_at, ended_at, updated_at, deltas_rejected`

func loadExecutions(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (map[uuid.UUID]*execution, error) {
	rs, err := tx.Query(ctx, `SELECT `+executionColumns+` FROM executions WHERE execution_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("load executions: %w", err)
	}
	defer rs.Close()
	out := make(map[uuid.UUID]*execution, len(ids))
	for rs.Next() {
		var (
			r              execution
			provider, blob *string
			started, ended *time.Time
		)
		if err := rs.Scan(&r.ID, &r.WorkflowID, &r.WorkflowRevision, &r.Status, &r.Priority, &r.Input, &r.Output,
			&r.Error, &r.Run, &provider, &blob, &r.QueuedAt, &started, &ended, &r.UpdatedAt, &r.DeltasRejected); err != nil {
			return nil, fmt.Errorf("load executions: %w", err)
		}
		r.ProviderID, r.BlobID = deref(provider), deref(blob)
		if started != nil {
			r.StartedAt = *started
		}
		if ended != nil {
			r.EndedAt = *ended
		}
		out[r.ID] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load executions: %w", err)
	}
	return out, nil
}

func upsertExecutions(ctx context.Context, tx pgx.Tx, rows map[uuid.UUID]*execution, ids []uuid.UUID) error {
	// One statement: the rows travel as one array per column.
	n := len(ids)
	var (
		workflow, status                    = make([]string, n), make([]string, n)
		revision, priority, run             = make([]int32, n), make([]int32, n), make([]int32, n)
		input, output, errs, provider, blob = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		rejected                            = make([]*string, n)
		queued, updated                     = make([]time.Time, n), make([]time.Time, n)
		started, ended                      = make([]*time.Time, n), make([]*time.Time, n)
	)
	for i, id := range ids {
		r := rows[id]
		workflow[i], status[i] = r.WorkflowID, r.Status
		revision[i], priority[i], run[i] = int32(r.WorkflowRevision), int32(r.Priority), int32(r.Run)
		input[i], output[i], errs[i] = text(r.Input), text(r.Output), text(r.Error)
		provider[i], blob[i] = text([]byte(r.ProviderID)), text([]byte(r.BlobID))
		queued[i], updated[i] = r.QueuedAt, r.UpdatedAt
		started[i], ended[i] = timePtr(r.StartedAt), timePtr(r.EndedAt)
		rejected[i] = text(r.DeltasRejected)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO executions (`+executionColumns+`)
		SELECT id, wf, rev, st, prio, inp::jsonb, outp::jsonb, err::jsonb, run, prov, blob, q, s, e, u, rej::jsonb
		FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[],
			$9::int[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[],
			$15::timestamptz[], $16::text[])
			AS r(id, wf, rev, st, prio, inp, outp, err, run, prov, blob, q, s, e, u, rej)
		ON CONFLICT (execution_id) DO UPDATE SET
			workflow_id = EXCLUDED.workflow_id, workflow_revision = EXCLUDED.workflow_revision,
			status = EXCLUDED.status, priority = EXCLUDED.priority, input = EXCLUDED.input,
			output = EXCLUDED.output, error = EXCLUDED.error, run = EXCLUDED.run,
			provider_id = EXCLUDED.provider_id, blob_id = EXCLUDED.blob_id, queued_at = EXCLUDED.queued_at,
			started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, updated_at = EXCLUDED.updated_at,
			deltas_rejected = EXCLUDED.deltas_rejected`,
		ids, workflow, revision, status, priority, input, output, errs, run, provider, blob, queued, started, ended,
		updated, rejected); err != nil {
		return fmt.Errorf("upsert executions: %w", err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// text is b as a string, nil for NULL when b is empty.
func text(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
