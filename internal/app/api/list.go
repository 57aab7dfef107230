package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/execution"
)

// Views is what the API needs of the projections' tables; *views.Views is one.
type Views interface {
	Executions(ctx context.Context, q views.ExecutionQuery) (views.ExecutionPage, error)
	ExecutionDetail(ctx context.Context, id string, atLeast uint64) (*views.ExecutionDetail, error)
	Queue(ctx context.Context, q views.QueueQuery) (views.QueuePage, error)
	DeadLetterViews
	BlobViews
}

// Limits of GET /v1/executions and GET /v1/queue.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

var errNoDatabase = errors.New("no database configured: this memmie serves its lists from Postgres; start it with --database-url (MEMMIE_DATABASE_URL)")

// statuses are those an execution's row may have (the core's).
var statuses = map[string]bool{}

func init() {
	for _, s := range []execution.Status{execution.StatusQueued, execution.StatusRunning, execution.StatusCompensating,
		execution.StatusRetryScheduled, execution.StatusCompleted, execution.StatusFailed, execution.StatusCancelled} {
		statuses[string(s)] = true
	}
}

// listExecutions answers GET /v1/executions from the executions projection: newest first,
// a page at a time.
func (a *API) listExecutions(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Views == nil {
		a.fail(w, r, errNoDatabase)
		return
	}
	q := r.URL.Query()
	query := views.ExecutionQuery{Status: q.Get("status"), WorkflowID: q.Get("workflow_id"),
		ProviderID: q.Get("provider_id"), BlobID: q.Get("blob_id"), Cursor: q.Get("cursor")}
	if query.Status != "" && !statuses[query.Status] {
		a.fail(w, r, badRequest("status %q: want queued, running, compensating, retry_scheduled, completed, failed or cancelled", query.Status))
		return
	}
	limit, err := listLimit(q.Get("limit"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	query.Limit = limit
	page, err := a.cfg.Views.Executions(r.Context(), query)
	a.writePage(w, r, page, err)
}

// listLimit parses a list's limit parameter: DefaultListLimit when empty, 1 to MaxListLimit.
func listLimit(s string) (int, error) {
	if s == "" {
		return DefaultListLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxListLimit {
		return 0, badRequest("limit %q: want 1 to %d", s, MaxListLimit)
	}
	return n, nil
}

// writePage answers one page of a list, or its error (a cursor no page gave is a bad request).
func (a *API) writePage(w http.ResponseWriter, r *http.Request, page any, err error) {
	if errors.Is(err, views.ErrCursor) {
		err = badRequest("%v", err)
	}
	if err != nil {
		a.failView(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// failView answers the error of a read of the projections' tables: 503 naming postgres when
// the database does not answer a ping (it is down, not memmie broken: the client may try again),
// as fail does otherwise.
func (a *API) failView(w http.ResponseWriter, r *http.Request, err error) {
	if a.cfg.Postgres == nil || errors.Is(err, errBadRequest) {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.ReadyTimeout)
	defer cancel()
	if perr := a.cfg.Postgres(ctx); perr != nil && r.Context().Err() == nil {
		a.log.Warn("request failed: postgres unreachable", "method", r.Method, "path", r.URL.Path, "err", err)
		writeErrorBody(w, http.StatusServiceUnavailable, errorBody{Error: errorDetail{Code: "unavailable",
			Message: "postgres: the database of the projections does not answer; try again later (see /readyz)", Dependency: "postgres"}})
		return
	}
	a.fail(w, r, err)
}
