package views

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
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
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Status != "" {
		where = append(where, "status = "+arg(q.Status))
	}
	if q.WorkflowID != "" {
		where = append(where, "workflow_id = "+arg(q.WorkflowID))
	}
	if q.Cursor != "" {
		at, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return ExecutionPage{}, err
		}
		// A row comparison, which the (…, queued_at DESC, execution_id DESC) indexes serve.
		where = append(where, "(queued_at, execution_id) < ("+arg(at)+", "+arg(id)+")")
	}
	sql := `SELECT execution_id, workflow_id, workflow_revision, status, priority, input, output, error, run,
		coalesce(provider_id, ''), coalesce(blob_id, ''), queued_at, started_at, ended_at, updated_at FROM executions`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	// One row more than the page tells whether there is a next one.
	sql += " ORDER BY queued_at DESC, execution_id DESC LIMIT " + arg(q.Limit+1)

	rows, err := v.pool.Query(ctx, sql, args...)
	if err != nil {
		return ExecutionPage{}, fmt.Errorf("list executions: %w", err)
	}
	defer rows.Close()
	page := ExecutionPage{Executions: []Execution{}}
	for rows.Next() {
		var (
			e                      Execution
			id                     uuid.UUID
			input, output, errJSON []byte
		)
		if err := rows.Scan(&id, &e.WorkflowID, &e.WorkflowRevision, &e.Status, &e.Priority, &input, &output,
			&errJSON, &e.Run, &e.ProviderID, &e.BlobID, &e.QueuedAt, &e.StartedAt, &e.EndedAt, &e.UpdatedAt); err != nil {
			return ExecutionPage{}, fmt.Errorf("list executions: %w", err)
		}
		e.ExecutionID = id.String()
		// nil for NULL, so that omitempty leaves them out.
		e.Input, e.Output, e.Error = input, output, errJSON
		page.Executions = append(page.Executions, e)
	}
	if err := rows.Err(); err != nil {
		return ExecutionPage{}, fmt.Errorf("list executions: %w", err)
	}
	if len(page.Executions) > q.Limit {
		page.Executions = page.Executions[:q.Limit]
		last := page.Executions[q.Limit-1]
		page.Next = encodeCursor(last.QueuedAt, last.ExecutionID)
	}
	return page, nil
}

// A cursor is the last row's sort key, "<queued_at in Unix microseconds>.<execution id>", in
// base64url: opaque to clients, and exact, since Postgres keeps microseconds.
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func decodeCursor(s string) (time.Time, uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, uuid.UUID{}, fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	micros, rawID, ok := strings.Cut(string(b), ".")
	n, nerr := strconv.ParseInt(micros, 10, 64)
	id, ierr := uuid.Parse(rawID)
	if !ok || nerr != nil || ierr != nil {
		return time.Time{}, uuid.UUID{}, fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	}
	return time.UnixMicro(n).UTC(), id, nil
}
