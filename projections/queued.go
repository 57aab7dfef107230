package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// Queued is the queued_executions projection: one row per execution in the queued_executions
// table, from its queuing to the end of its last run, folded from MEMMIE_EXECUTIONS.
//
//   - The row's id is the UUIDv5 of the name "queued_executions" in the execution id's
//     namespace, so that a rebuild gives the same ids.
//   - created_at is the queued event's time; queued_at is the time the current run was queued
//     (the queued event, then each requeued one); updated_at is the time of the last event that
//     changed the row. All come from the events, never from the clock, so that a rebuild gives
//     the same rows.
//   - status: queued and requeued make it pending, started running, and the run's end
//     completed, failed or cancelled. An automatic retry (execution.retry_scheduled) makes it
//     pending again, with retry_count and metadata.retry_at, when the retry is due; the
//     requeued event that follows clears retry_at. A compensating run stays running.
//   - retry_count is the core's count of automatic re-runs; max_retries is the queued event's.
//   - metadata holds run (the current run, which the fold's guards need), provider_id, blob_id
//     and trigger (the id of the event that triggered the execution) when there is one, and
//     retry_at while a retry waits. provider_id, blob_id and trigger are also columns.
type Queued struct {
	log *slog.Logger
}

// NewQueued returns the queued_executions projection. A nil log discards.
func NewQueued(log *slog.Logger) *Queued {
	return &Queued{log: orDiscard(log)}
}

func (*Queued) Name() string   { return "queued_executions" }
func (*Queued) Stream() string { return streams.Executions }

// The statuses of queued_executions (its CHECK constraint).
const (
	queuePending   = "pending"
	queueRunning   = "running"
	queueCompleted = "completed"
	queueFailed    = "failed"
	queueCancelled = "cancelled"
)

// queuedRowID is the row id of an execution's queued_executions row.
func queuedRowID(execution uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(execution, []byte("queued_executions"))
}

// queueRow is a row of queued_executions. An empty string or a zero time is NULL or absent.
type queueRow struct {
	ID               uuid.UUID
	ExecutionID      uuid.UUID
	WorkflowID       string
	WorkflowRevision int
	Priority         int
	Status           string
	RetryCount       int
	MaxRetries       int
	ProviderID       string
	Trigger          string
	BlobID           string
	QueuedAt         time.Time
	CreatedAt        time.Time
	UpdatedAt        time.Time
	// Run and RetryAt are kept in metadata.
	Run     int
	RetryAt time.Time
}

// queuedMetadata is the metadata column.
type queuedMetadata struct {
	Run        int        `json:"run"`
	ProviderID string     `json:"provider_id,omitempty"`
	BlobID     string     `json:"blob_id,omitempty"`
	Trigger    string     `json:"trigger,omitempty"`
	RetryAt    *time.Time `json:"retry_at,omitempty"`
}

func (r *queueRow) metadata() ([]byte, error) {
	m := queuedMetadata{Run: r.Run, ProviderID: r.ProviderID, BlobID: r.BlobID, Trigger: r.Trigger}
	if !r.RetryAt.IsZero() {
		at := r.RetryAt.UTC()
		m.RetryAt = &at
	}
	return json.Marshal(m)
}

func (r *queueRow) equal(o *queueRow) bool {
	return r.ID == o.ID && r.ExecutionID == o.ExecutionID && r.WorkflowID == o.WorkflowID &&
		r.WorkflowRevision == o.WorkflowRevision && r.Priority == o.Priority && r.Status == o.Status &&
		r.RetryCount == o.RetryCount && r.MaxRetries == o.MaxRetries && r.ProviderID == o.ProviderID &&
		r.Trigger == o.Trigger && r.BlobID == o.BlobID && r.QueuedAt.Equal(o.QueuedAt) &&
		r.CreatedAt.Equal(o.CreatedAt) && r.UpdatedAt.Equal(o.UpdatedAt) && r.Run == o.Run &&
		r.RetryAt.Equal(o.RetryAt)
}

// foldQueued folds one event into row, which is nil when the execution has no row yet. It
// returns the row after the event and whether the event changed it. Like foldExecution it is
// pure and idempotent: an event applies only to the run and status the core would apply it to,
// so that an event folded a second time is refused or sets what it set already.
func foldQueued(row *queueRow, ev Event) (*queueRow, bool, error) {
	if q, ok := ev.Data.(*events.ExecutionQueued); ok {
		if row != nil {
			return row, false, nil
		}
		id, err := uuid.Parse(q.ExecutionID)
		if err != nil {
			return nil, false, fmt.Errorf("execution id %q: %w", q.ExecutionID, err)
		}
		return &queueRow{
			ID: queuedRowID(id), ExecutionID: id, WorkflowID: q.WorkflowID, WorkflowRevision: q.WorkflowRevision,
			Priority: q.Priority, Status: queuePending, MaxRetries: q.MaxRetries,
			ProviderID: q.ProviderID, Trigger: q.SourceEventID, BlobID: q.BlobID,
			QueuedAt: ev.Time, CreatedAt: ev.Time, UpdatedAt: ev.Time, Run: 1,
		}, true, nil
	}
	if row == nil {
		return nil, false, nil
	}
	r := *row
	// waiting is a run that ended with an automatic retry to come.
	waiting := r.Status == queuePending && !r.RetryAt.IsZero()
	switch d := ev.Data.(type) {
	case *events.ExecutionStarted:
		if r.Status != queuePending || waiting || d.Run != r.Run {
			return row, false, nil
		}
		r.Status = queueRunning
	case *events.ExecutionCompleted:
		if d.Run != r.Run || waiting {
			return row, false, nil
		}
		r.Status = queueCompleted
	case *events.ExecutionFailed:
		if d.Run != r.Run || waiting {
			return row, false, nil
		}
		r.Status = queueFailed
	case *events.ExecutionRetryScheduled:
		if d.Run != r.Run {
			return row, false, nil
		}
		at := d.DueAt
		if at.IsZero() {
			at = ev.Time // the core always sets it; a zero one must still mark the wait
		}
		r.Status, r.RetryCount, r.RetryAt = queuePending, d.RetryCount, at
	case *events.ExecutionCancelled:
		// A cancel during a retry's wait ends the run that waited to be queued.
		if d.Run != r.Run && (!waiting || d.Run != r.Run+1) {
			return row, false, nil
		}
		r.Status, r.Run, r.RetryAt = queueCancelled, d.Run, time.Time{}
	case *events.ExecutionRequeued:
		if d.Run != r.Run+1 {
			return row, false, nil
		}
		r.Status, r.Run, r.RetryCount, r.RetryAt, r.QueuedAt = queuePending, d.Run, d.RetryCount, time.Time{}, ev.Time
		if d.Priority != nil {
			r.Priority = *d.Priority
		}
	default:
		return row, false, nil
	}
	r.UpdatedAt = ev.Time
	if r.equal(row) {
		return row, false, nil
	}
	return &r, true, nil
}

// Apply loads the rows of the batch's executions, folds the batch into them and upserts the
// rows it changed in one INSERT ... ON CONFLICT over arrays.
func (p *Queued) Apply(ctx context.Context, tx pgx.Tx, batch []Event) error {
	ids := make([]uuid.UUID, 0, len(batch))
	seen := make(map[uuid.UUID]bool, len(batch))
	for _, ev := range batch {
		id, ok := executionOf(ev)
		if ok && !seen[id] {
			seen[id] = true
			ids = append(ids, queuedRowID(id))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := loadQueued(ctx, tx, ids)
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
		id = queuedRowID(id)
		row, ch, err := foldQueued(rows[id], ev)
		if err != nil {
			// An event that cannot make a row would stop the projection forever: leave it
			// out, loudly.
			p.log.Error("queued_executions projection: event left out", "event_id", ev.ID, "seq", ev.Seq, "err", err)
			continue
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
	return upsertQueued(ctx, tx, rows, changed)
}

const queuedColumns = `id, execution_id, workflow_id, workflow_revision, priority, status, retry_count, max_retries,
	provider_id, trigger, blob_id, queued_at, created_at, updated_at, metadata`

func loadQueued(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (map[uuid.UUID]*queueRow, error) {
	rs, err := tx.Query(ctx, `SELECT `+queuedColumns+` FROM queued_executions WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("load queued executions: %w", err)
	}
	defer rs.Close()
	out := make(map[uuid.UUID]*queueRow, len(ids))
	for rs.Next() {
		var (
			r                       queueRow
			provider, trigger, blob *string
			meta                    []byte
		)
		if err := rs.Scan(&r.ID, &r.ExecutionID, &r.WorkflowID, &r.WorkflowRevision, &r.Priority, &r.Status,
			&r.RetryCount, &r.MaxRetries, &provider, &trigger, &blob, &r.QueuedAt, &r.CreatedAt, &r.UpdatedAt,
			&meta); err != nil {
			return nil, fmt.Errorf("load queued executions: %w", err)
		}
		r.ProviderID, r.Trigger, r.BlobID = deref(provider), deref(trigger), deref(blob)
		var m queuedMetadata
		if err := json.Unmarshal(meta, &m); err != nil {
			return nil, fmt.Errorf("load queued execution %s metadata: %w", r.ExecutionID, err)
		}
		r.Run = m.Run
		if m.RetryAt != nil {
			r.RetryAt = *m.RetryAt
		}
		out[r.ID] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load queued executions: %w", err)
	}
	return out, nil
}

func upsertQueued(ctx context.Context, tx pgx.Tx, rows map[uuid.UUID]*queueRow, ids []uuid.UUID) error {
	// One statement: the rows travel as one array per column.
	n := len(ids)
	var (
		execution                      = make([]uuid.UUID, n)
		workflow, status, meta         = make([]string, n), make([]string, n), make([]string, n)
		revision, priority             = make([]int32, n), make([]int32, n)
		retries, maxRetries            = make([]int32, n), make([]int32, n)
		provider, trigger, blob        = make([]*string, n), make([]*string, n), make([]*string, n)
		queuedAt, createdAt, updatedAt = make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	)
	for i, id := range ids {
		r := rows[id]
		m, err := r.metadata()
		if err != nil {
			return fmt.Errorf("queued execution %s metadata: %w", r.ExecutionID, err)
		}
		execution[i], workflow[i], status[i], meta[i] = r.ExecutionID, r.WorkflowID, r.Status, string(m)
		revision[i], priority[i] = int32(r.WorkflowRevision), int32(r.Priority)
		retries[i], maxRetries[i] = int32(r.RetryCount), int32(r.MaxRetries)
		provider[i], trigger[i], blob[i] = text([]byte(r.ProviderID)), text([]byte(r.Trigger)), text([]byte(r.BlobID))
		queuedAt[i], createdAt[i], updatedAt[i] = r.QueuedAt, r.CreatedAt, r.UpdatedAt
	}
	if _, err := tx.Exec(ctx, `INSERT INTO queued_executions (`+queuedColumns+`)
		SELECT id, ex, wf, rev, prio, st, rc, mr, prov, trig, blob, q, c, u, meta::jsonb
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[], $6::text[], $7::int[], $8::int[],
			$9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[],
			$15::text[])
			AS r(id, ex, wf, rev, prio, st, rc, mr, prov, trig, blob, q, c, u, meta)
		ON CONFLICT (id) DO UPDATE SET
			execution_id = EXCLUDED.execution_id, workflow_id = EXCLUDED.workflow_id,
			workflow_revision = EXCLUDED.workflow_revision, priority = EXCLUDED.priority,
			status = EXCLUDED.status, retry_count = EXCLUDED.retry_count, max_retries = EXCLUDED.max_retries,
			provider_id = EXCLUDED.provider_id, trigger = EXCLUDED.trigger, blob_id = EXCLUDED.blob_id,
			queued_at = EXCLUDED.queued_at, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
			metadata = EXCLUDED.metadata`,
		ids, execution, workflow, revision, priority, status, retries, maxRetries, provider, trigger, blob,
		queuedAt, createdAt, updatedAt, meta); err != nil {
		return fmt.Errorf("upsert queued executions: %w", err)
	}
	return nil
}
