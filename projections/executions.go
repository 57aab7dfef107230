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

// Executions is the executions projection: one row per execution in the executions table, as of
// its latest run, folded from MEMMIE_EXECUTIONS. Step events leave the row alone.
type Executions struct {
	log *slog.Logger
}

// NewExecutions returns the executions projection. A nil log discards.
func NewExecutions(log *slog.Logger) *Executions {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Executions{log: log}
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
	// LastSeq is the sequence of the last event folded into the row.
	LastSeq uint64
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
// returns the row after the event and whether the event changed it. It is pure: an event at or
// below the row's LastSeq, or one that does not apply to the row's run (the core records those
// as stale), changes nothing.
func foldExecution(row *execution, ev Event) (*execution, bool, error) {
	if row != nil && ev.Seq <= row.LastSeq {
		return row, false, nil
	}
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
			QueuedAt: ev.Time, UpdatedAt: ev.Time, LastSeq: ev.Seq,
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
	default:
		return row, false, nil
	}
	r.UpdatedAt, r.LastSeq = ev.Time, ev.Seq
	return &r, true, nil
}

func rawJSON(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// Apply loads the rows of the batch's executions, folds the batch into them and upserts the
// rows it changed: a COPY into a temporary table, then one INSERT ... ON CONFLICT that keeps a
// stored row whose last_seq is not older.
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
	run, provider_id, blob_id, queued_at, started_at, ended_at, updated_at, last_seq`

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
			lastSeq        int64
		)
		if err := rs.Scan(&r.ID, &r.WorkflowID, &r.WorkflowRevision, &r.Status, &r.Priority, &r.Input, &r.Output,
			&r.Error, &r.Run, &provider, &blob, &r.QueuedAt, &started, &ended, &r.UpdatedAt, &lastSeq); err != nil {
			return nil, fmt.Errorf("load executions: %w", err)
		}
		r.ProviderID, r.BlobID = deref(provider), deref(blob)
		if started != nil {
			r.StartedAt = *started
		}
		if ended != nil {
			r.EndedAt = *ended
		}
		r.LastSeq = uint64(lastSeq)
		out[r.ID] = &r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("load executions: %w", err)
	}
	return out, nil
}

func upsertExecutions(ctx context.Context, tx pgx.Tx, rows map[uuid.UUID]*execution, ids []uuid.UUID) error {
	// The staging table lives as long as the connection; its rows go with each transaction.
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS executions_staged
		(LIKE executions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		return fmt.Errorf("stage executions: %w", err)
	}
	src := pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
		r := rows[ids[i]]
		return []any{r.ID, r.WorkflowID, r.WorkflowRevision, r.Status, r.Priority, jsonb(r.Input), jsonb(r.Output),
			jsonb(r.Error), r.Run, null(r.ProviderID), null(r.BlobID), r.QueuedAt, nullTime(r.StartedAt),
			nullTime(r.EndedAt), r.UpdatedAt, int64(r.LastSeq)}, nil
	})
	cols := []string{"execution_id", "workflow_id", "workflow_revision", "status", "priority", "input", "output", "error",
		"run", "provider_id", "blob_id", "queued_at", "started_at", "ended_at", "updated_at", "last_seq"}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"executions_staged"}, cols, src); err != nil {
		return fmt.Errorf("stage executions: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO executions (`+executionColumns+`)
		SELECT `+executionColumns+` FROM executions_staged
		ON CONFLICT (execution_id) DO UPDATE SET
			workflow_id = EXCLUDED.workflow_id, workflow_revision = EXCLUDED.workflow_revision,
			status = EXCLUDED.status, priority = EXCLUDED.priority, input = EXCLUDED.input,
			output = EXCLUDED.output, error = EXCLUDED.error, run = EXCLUDED.run,
			provider_id = EXCLUDED.provider_id, blob_id = EXCLUDED.blob_id, queued_at = EXCLUDED.queued_at,
			started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, updated_at = EXCLUDED.updated_at,
			last_seq = EXCLUDED.last_seq
		WHERE executions.last_seq < EXCLUDED.last_seq`); err != nil {
		return fmt.Errorf("upsert executions: %w", err)
	}
	if _, err := tx.Exec(ctx, `TRUNCATE executions_staged`); err != nil {
		return fmt.Errorf("clear staged executions: %w", err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func null(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// jsonb passes raw JSON as such (a []byte would be taken for a JSON string of base64), nil as
// NULL.
func jsonb(b []byte) any {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}
