package views

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// QueuedExecution is a row of the queued_executions table: an execution from its queuing to
// the end of its last run.
type QueuedExecution struct {
	ID          string          `json:"id"`
	ExecutionID string          `json:"execution_id"`
	WorkflowID  string          `json:"workflow_id"`
	Priority    int             `json:"priority"`
	Status      string          `json:"status"`
	RetryCount  int             `json:"retry_count"`
	MaxRetries  int             `json:"max_retries"`
	QueuedAt    time.Time       `json:"queued_at"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Metadata    json.RawMessage `json:"metadata"`
}

// The statuses of queued_executions. Pending and running are the ones not ended.
const (
	QueuePending   = "pending"
	QueueRunning   = "running"
	QueueCompleted = "completed"
	QueueFailed    = "failed"
	QueueCancelled = "cancelled"
)

// QueueQuery selects a page of queued_executions, in the order the dispatcher starts them:
// highest priority first, then oldest queued, then by row id.
type QueueQuery struct {
	// Status, when set, keeps only the rows that have it. Defaults to the rows not ended
	// (pending and running).
	Status string
	// Limit bounds the page; it must be positive.
	Limit int
	// Cursor is the Next of the page before; empty for the first page.
	Cursor string
}

// QueuePage is a page of queued_executions.
type QueuePage struct {
	Queue []QueuedExecution `json:"queue"`
	// Next, when set, is the cursor of the next page: more rows followed this page when it was
	// read. Absent on the last page.
	Next string `json:"next,omitempty"`
}

// Queue returns a page of queued_executions.
func (v *Views) Queue(ctx context.Context, q QueueQuery) (QueuePage, error) {
	if q.Limit <= 0 {
		return QueuePage{}, fmt.Errorf("list queue: limit %d is not positive", q.Limit)
	}
	var lq listQuery
	if q.Status != "" {
		lq.where = append(lq.where, "status = "+lq.arg(q.Status))
	} else {
		lq.where = append(lq.where, "status IN ("+lq.arg(QueuePending)+", "+lq.arg(QueueRunning)+")")
	}
	if q.Cursor != "" {
		prio, at, id, err := decodeQueueCursor(q.Cursor)
		if err != nil {
			return QueuePage{}, err
		}
		// The rows after the cursor's in (priority DESC, queued_at, id): the directions differ,
		// so no single row comparison says it.
		p, a, i := lq.arg(prio), lq.arg(at), lq.arg(id)
		lq.where = append(lq.where, "(priority < "+p+" OR (priority = "+p+" AND (queued_at, id) > ("+a+", "+i+")))")
	}
	sql := lq.sql(`SELECT id, execution_id, workflow_id, priority, status, retry_count, max_retries, queued_at,
		created_at, updated_at, metadata FROM queued_executions`, "priority DESC, queued_at, id", q.Limit)
	rows, next, err := readPage(ctx, v, "queue", sql, &lq, q.Limit, scanQueued,
		func(e QueuedExecution) string { return encodeQueueCursor(e.Priority, e.QueuedAt, e.ID) })
	if err != nil {
		return QueuePage{}, err
	}
	return QueuePage{Queue: rows, Next: next}, nil
}

func scanQueued(rows pgx.Rows) (QueuedExecution, error) {
	var (
		e       QueuedExecution
		id, eid uuid.UUID
		meta    []byte
	)
	if err := rows.Scan(&id, &eid, &e.WorkflowID, &e.Priority, &e.Status, &e.RetryCount, &e.MaxRetries,
		&e.QueuedAt, &e.CreatedAt, &e.UpdatedAt, &meta); err != nil {
		return QueuedExecution{}, err
	}
	e.ID, e.ExecutionID, e.Metadata = id.String(), eid.String(), meta
	return e, nil
}

// A queue cursor is the last row's sort key, "<priority>.<queued_at in Unix microseconds>.<row
// id>", in base64url.
func encodeQueueCursor(priority int, at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(priority) + "." +
		strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func decodeQueueCursor(s string) (int, time.Time, uuid.UUID, error) {
	bad := fmt.Errorf("%w %q: not one a page gave", ErrCursor, s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, time.Time{}, uuid.UUID{}, bad
	}
	parts := strings.SplitN(string(b), ".", 3)
	if len(parts) != 3 {
		return 0, time.Time{}, uuid.UUID{}, bad
	}
	prio, perr := strconv.Atoi(parts[0])
	micros, merr := strconv.ParseInt(parts[1], 10, 64)
	id, ierr := uuid.Parse(parts[2])
	if perr != nil || merr != nil || ierr != nil {
		return 0, time.Time{}, uuid.UUID{}, bad
	}
	return prio, time.UnixMicro(micros).UTC(), id, nil
}
