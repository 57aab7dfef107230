package api

import (
	"net/http"

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
	query := views.QueueQuery{Status: q.Get("status"), Cursor: q.Get("cursor")}
	if query.Status != "" && !queueStatuses[query.Status] {
		a.fail(w, r, badRequest("status %q: want pending, running, completed, failed or cancelled", query.Status))
		return
	}
	limit, err := listLimit(q.Get("limit"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	query.Limit = limit
	page, err := a.cfg.Views.Queue(r.Context(), query)
	a.writePage(w, r, page, err)
}
