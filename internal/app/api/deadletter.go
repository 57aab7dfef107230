package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
)

// DeadLetterViews is what the dead-letter endpoints need of the projections' tables.
type DeadLetterViews interface {
	DeadLetters(ctx context.Context, q views.DeadLetterQuery) (views.DeadLetterPage, error)
	DeadLetter(ctx context.Context, id string) (views.DeadLetter, error)
}

// Redriver sends a dead letter's original message back to its subject and records the
// redrive; *deadletter.Writer is one.
type Redriver interface {
	Redrive(ctx context.Context, id string, dl *events.DeadLetter) (deadletter.Redriven, error)
}

var errNoRedriver = errors.New("this memmie cannot redrive: it has no JetStream connection for it")

// deadLetterAnswer is GET /v1/deadletter/{id}: the row, and whether a redrive would take it.
type deadLetterAnswer struct {
	views.DeadLetter
	Redrivable bool `json:"redrivable"`
	// NotRedrivable says why not, when it is not.
	NotRedrivable string `json:"not_redrivable,omitempty"`
}

// redriveAnswer is POST /v1/deadletter/{id}/redrive: what was sent.
type redriveAnswer struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Stream  string `json:"stream"`
	Seq     uint64 `json:"seq"`
	MsgID   string `json:"msg_id"`
	// Duplicate is true when the stream had the message already (a redrive within its
	// duplicate window): nothing new was delivered, and the answer is 200 rather than 202.
	Duplicate  bool      `json:"duplicate"`
	RedrivenAt time.Time `json:"redriven_at"`
}

// listDeadLetters answers GET /v1/deadletter from the dead_letters projection: newest first,
// a page at a time.
func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Views == nil {
		a.fail(w, r, errNoDatabase)
		return
	}
	q := r.URL.Query()
	query := views.DeadLetterQuery{Source: q.Get("source"), Cursor: q.Get("cursor")}
	if query.Source != "" {
		if err := events.ValidToken(query.Source); err != nil {
			a.fail(w, r, badRequest("source: %v", err))
			return
		}
	}
	limit, err := listLimit(q.Get("limit"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	query.Limit = limit
	page, err := a.cfg.Views.DeadLetters(r.Context(), query)
	a.writePage(w, r, page, err)
}

// getDeadLetter answers GET /v1/deadletter/{id}, with the original message.
func (a *API) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	dl, err := a.deadLetter(r)
	if err != nil {
		a.failDeadLetter(w, r, err)
		return
	}
	ans := deadLetterAnswer{DeadLetter: dl, Redrivable: true}
	if _, err := deadletter.Target(eventOf(dl)); err != nil {
		ans.Redrivable, ans.NotRedrivable = false, err.Error()
	}
	writeJSON(w, http.StatusOK, ans)
}

// redriveDeadLetter answers POST /v1/deadletter/{id}/redrive: it sends the original message
// back to its subject (see deadletter.Writer.Redrive), 202 when it was sent, 200 when the
// stream had it already, 422 not_redrivable when it may not be sent back.
func (a *API) redriveDeadLetter(w http.ResponseWriter, r *http.Request) {
	dl, err := a.deadLetter(r)
	if err != nil {
		a.failDeadLetter(w, r, err)
		return
	}
	if a.cfg.Redriver == nil {
		a.fail(w, r, errNoRedriver)
		return
	}
	sent, err := a.cfg.Redriver.Redrive(r.Context(), dl.ID, eventOf(dl))
	if err != nil {
		a.failDeadLetter(w, r, err)
		return
	}
	status := http.StatusAccepted
	if sent.Duplicate {
		status = http.StatusOK
	}
	a.log.Info("dead letter redriven", "dead_letter_id", dl.ID, "source", dl.Source, "subject", sent.Subject,
		"stream", sent.Stream, "seq", sent.Sequence, "duplicate", sent.Duplicate)
	writeJSON(w, status, redriveAnswer{ID: sent.DeadLetterID, Subject: sent.Subject, Stream: sent.Stream, Seq: sent.Sequence,
		MsgID: sent.MsgID, Duplicate: sent.Duplicate, RedrivenAt: sent.At})
}

// deadLetter reads the dead letter of the request's path.
func (a *API) deadLetter(r *http.Request) (views.DeadLetter, error) {
	if a.cfg.Views == nil {
		return views.DeadLetter{}, errNoDatabase
	}
	id := r.PathValue("id")
	if err := events.ValidToken(id); err != nil {
		return views.DeadLetter{}, badRequest("dead letter id: %v", err)
	}
	return a.cfg.Views.DeadLetter(r.Context(), id)
}

// failDeadLetter is failView, with the dead letters' own errors.
func (a *API) failDeadLetter(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, views.ErrDeadLetterNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, deadletter.ErrNotRedrivable):
		writeError(w, http.StatusUnprocessableEntity, "not_redrivable", err.Error())
	default:
		a.failView(w, r, err)
	}
}

// eventOf is the dead letter's event data, as a redrive reads it.
func eventOf(dl views.DeadLetter) *events.DeadLetter {
	return &events.DeadLetter{Source: dl.Source, Stream: dl.Stream, Sequence: dl.StreamSeq, Subject: dl.Subject,
		Headers: dl.Headers, Data: dl.Data, Truncated: dl.Truncated, Reason: dl.Reason}
}
