package views

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/memmie/memmie/events/streams"
)

// Views reads the projections' tables.
type Views struct {
	pool *pgxpool.Pool
}

// New returns the views on pool's database.
func New(pool *pgxpool.Pool) *Views { return &Views{pool: pool} }

// Execution is a row of the executions table: an execution as of its latest run.
type Execution struct {
	ExecutionID      string          `json:"execution_id"`
	WorkflowID       string          `json:"workflow_id"`
	WorkflowRevision int             `json:"workflow_revision"`
	Status           string          `json:"status"`
	Priority         int             `json:"priority"`
	Input            json.RawMessage `json:"input,omitempty"`
	Output           json.RawMessage `json:"output,omitempty"`
	Error            json.RawMessage `json:"error,omitempty"`
	Run              int             `json:"run"`
	ProviderID       string          `json:"provider_id,omitempty"`
	BlobID           string          `json:"blob_id,omitempty"`
	QueuedAt         time.Time       `json:"queued_at"`
	StartedAt        *time.Time      `json:"started_at,omitempty"`
	EndedAt          *time.Time      `json:"ended_at,omitempty"`
	UpdatedAt        time.Time       `json:"updated_at"`
}

// ExecutionQuery selects a page of executions, newest first (by queued time, then id).
type ExecutionQuery struct {
	// Status and WorkflowID, when set, keep only the executions that have them.
	Status     string
	WorkflowID string
	// ProviderID and BlobID, when set, keep only the executions a trigger of that provider
	// started on that blob.
	ProviderID string
	BlobID     string
	// Limit bounds the page; it must be positive.
	Limit int
	// Cursor is the Next of the page before; empty for the first page.
	Cursor string
}

// ExecutionPage is a page of executions.
type ExecutionPage struct {
	Executions []Execution `json:"executions"`
	// Next, when set, is the cursor of the next page: more rows followed this page when it was
	// read. Absent on the last page.
	Next string `json:"next,omitempty"`
}

// ErrCursor is the error of a cursor that no page gave.
var ErrCursor = errors.New("invalid cursor")

// Executions returns a page of executions.
func (v *Views) Executions(ctx context.Context, q ExecutionQuery) (ExecutionPage, error) {
	if q.Limit <= 0 {
		return ExecutionPage{}, fmt.Errorf("list executions: limit %d is not positive", q.Limit)
	}
	var lq listQuery
	if q.Status != "" {
		lq.where = append(lq.where, "status = "+lq.arg(q.Status))
	}
	if q.WorkflowID != "" {
		lq.where = append(lq.where, "workflow_id = "+lq.arg(q.WorkflowID))
	}
	if q.ProviderID != "" {
		lq.where = append(lq.where, "provider_id = "+lq.arg(q.ProviderID))
	}
	if q.BlobID != "" {
		lq.where = append(lq.where, "blob_id = "+lq.arg(q.BlobID))
	}
	if q.Cursor != "" {
		at, id, err := decodeTimeCursor(q.Cursor, uuid.Parse)
		if err != nil {
			return ExecutionPage{}, err
		}
		// A row comparison, which the (…, queued_at DESC, execution_id DESC) indexes serve.
		lq.where = append(lq.where, "(queued_at, execution_id) < ("+lq.arg(at)+", "+lq.arg(id)+")")
	}
	sql := lq.sql(`SELECT execution_id, workflow_id, workflow_revision, status, priority, input, output, error, run,
		coalesce(provider_id, ''), coalesce(blob_id, ''), queued_at, started_at, ended_at, updated_at FROM executions`,
		"queued_at DESC, execution_id DESC", q.Limit)
	rows, next, err := readPage(ctx, v, "executions", sql, &lq, q.Limit, scanExecution,
		func(e Execution) string { return encodeTimeCursor(e.QueuedAt, e.ExecutionID) })
	if err != nil {
		return ExecutionPage{}, err
	}
	return ExecutionPage{Executions: rows, Next: next}, nil
}

func scanExecution(rows pgx.Rows) (Execution, error) {
	var (
		e                      Execution
		id                     uuid.UUID
		input, output, errJSON []byte
	)
	if err := rows.Scan(&id, &e.WorkflowID, &e.WorkflowRevision, &e.Status, &e.Priority, &input, &output,
		&errJSON, &e.Run, &e.ProviderID, &e.BlobID, &e.QueuedAt, &e.StartedAt, &e.EndedAt, &e.UpdatedAt); err != nil {
		return Execution{}, err
	}
	e.ExecutionID = id.String()
	// nil for NULL, so that omitempty leaves them out.
	e.Input, e.Output, e.Error = input, output, errJSON
	return e, nil
}

// ErrBehind is the error of ExecutionDetail when the projections have not applied the
// execution's history up to the sequence asked for, or hold no row of it: the stream must
// answer.
var ErrBehind = errors.New("the projections are behind the stream")

// StepAttempt is a row of the execution_steps table: one attempt of a step, or of its
// compensation, in a run.
type StepAttempt struct {
	Run          int             `json:"run"`
	StepID       string          `json:"step_id"`
	Attempt      int             `json:"attempt"`
	Compensation bool            `json:"compensation,omitempty"`
	Status       string          `json:"status"`
	Request      json.RawMessage `json:"request,omitempty"`
	Output       json.RawMessage `json:"output,omitempty"`
	Error        json.RawMessage `json:"error,omitempty"`
	DurationMS   *int64          `json:"duration_ms,omitempty"`
	StartedAt    *time.Time      `json:"started_at,omitempty"`
	EndedAt      *time.Time      `json:"ended_at,omitempty"`
}

// ExecutionDetail is one execution as the projections hold it: its executions row, what its
// queued_executions row adds, and its execution_steps rows.
type ExecutionDetail struct {
	Execution
	SourceEventID string
	RetryCount    int
	MaxRetries    int
	// DeltasRejected is the executions row's deltas_rejected: why the completed run's output
	// was not written on its blob, as JSON; nil when nothing was rejected.
	DeltasRejected json.RawMessage
	// Attempts are the execution_steps rows, by run, step, compensation and attempt.
	Attempts []StepAttempt
	// Seq is the lowest checkpoint of the three projections: the detail holds every event
	// of the stream up to it.
	Seq uint64
}

// detailProjections are the projections ExecutionDetail reads, as their checkpoints name them
// (projections.Executions, Queued and Steps).
var detailProjections = []string{"executions", "queued_executions", "execution_steps"}

// ExecutionDetail returns an execution as the executions, queued_executions and
// execution_steps projections hold it, read in one snapshot, provided that each of them has
// applied MEMMIE_EXECUTIONS up to sequence atLeast (the execution's last message, say);
// ErrBehind when one has not, or when they hold no row of it.
func (v *Views) ExecutionDetail(ctx context.Context, id string, atLeast uint64) (*ExecutionDetail, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not an id the projections hold", ErrBehind, id)
	}
	// One snapshot: the rows are those of the checkpoints read with them.
	tx, err := v.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read execution %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	d := &ExecutionDetail{Attempts: []StepAttempt{}}
	var (
		lowest *int64
		n      int
	)
	if err := tx.QueryRow(ctx, `SELECT min(last_seq), count(*) FROM projection_checkpoints
		WHERE stream = $1 AND projection = ANY($2)`, streams.Executions, detailProjections).Scan(&lowest, &n); err != nil {
		return nil, fmt.Errorf("read execution %s: checkpoints: %w", id, err)
	}
	if n < len(detailProjections) || lowest == nil || uint64(*lowest) < atLeast {
		return nil, fmt.Errorf("%w: execution %s up to %d", ErrBehind, id, atLeast)
	}
	d.Seq = uint64(*lowest)

	var (
		input, output, errJSON []byte
		rejected               []byte
		trigger                *string
		retries, maxRetries    *int
	)
	err = tx.QueryRow(ctx, `SELECT e.workflow_id, e.workflow_revision, e.status, e.priority, e.input, e.output, e.error,
			e.run, coalesce(e.provider_id, ''), coalesce(e.blob_id, ''), e.queued_at, e.started_at, e.ended_at,
			e.updated_at, e.deltas_rejected, q.trigger, q.retry_count, q.max_retries
		FROM executions e LEFT JOIN queued_executions q ON q.execution_id = e.execution_id
		WHERE e.execution_id = $1`, uid).Scan(&d.WorkflowID, &d.WorkflowRevision, &d.Status, &d.Priority, &input,
		&output, &errJSON, &d.Run, &d.ProviderID, &d.BlobID, &d.QueuedAt, &d.StartedAt, &d.EndedAt, &d.UpdatedAt,
		&rejected, &trigger, &retries, &maxRetries)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: no row of execution %s", ErrBehind, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read execution %s: %w", id, err)
	}
	d.ExecutionID = uid.String()
	d.Input, d.Output, d.Error, d.DeltasRejected = input, output, errJSON, rejected
	if trigger != nil {
		d.SourceEventID = *trigger
	}
	if retries != nil {
		d.RetryCount = *retries
	}
	if maxRetries != nil {
		d.MaxRetries = *maxRetries
	}

	rows, err := tx.Query(ctx, `SELECT run, step_id, attempt, compensation, status, request, output, error,
			duration_ms, started_at, ended_at
		FROM execution_steps WHERE execution_id = $1 ORDER BY run, step_id, compensation, attempt`, uid)
	if err != nil {
		return nil, fmt.Errorf("read the steps of execution %s: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			a                  StepAttempt
			req, out, stepErrs []byte
		)
		if err := rows.Scan(&a.Run, &a.StepID, &a.Attempt, &a.Compensation, &a.Status, &req, &out, &stepErrs,
			&a.DurationMS, &a.StartedAt, &a.EndedAt); err != nil {
			return nil, fmt.Errorf("read the steps of execution %s: %w", id, err)
		}
		a.Request, a.Output, a.Error = req, out, stepErrs
		d.Attempts = append(d.Attempts, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the steps of execution %s: %w", id, err)
	}
	return d, nil
}
