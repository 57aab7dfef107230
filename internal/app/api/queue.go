package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/memmie/memmie/internal/app/views"
)

// queueStatuses are those a queued_executions row may have.
var queueStatuses = map[string]bool{views.QueuePending: true, views.QueueRunning: true,
	views.QueueCompleted: true, views.QueueFailed: true, views.QueueCancelled: true}

// listQueue answers GET /v1/queue from the queued_executions projection: by default the rows
// not ended, in the order the dispatcher starts them, a page at a time.
func (a *API) listQueue(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Views == nil {
		a.fail(w, r, errNoDatabase)
		return
	}
	q := r.URL.Query()
	query := views.QueueQuery{Status: q.Get("status"), Limit: DefaultListLimit, Cursor: q.Get("cursor")}
	if query.Status != "" && !queueStatuses[query.Status] {
		a.fail(w, r, badRequest("status %q: want pending, running, completed, failed or cancelled", query.Status))
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			a.fail(w, r, badRequest("limit %q: want 1 to %d", s, MaxListLimit))
			return
		}
		query.Limit = n
	}
	page, err := a.cfg.Views.Queue(r.Context(), query)
	if errors.Is(err, views.ErrCursor) {
		err = badRequest("%v", err)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
