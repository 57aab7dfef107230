package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
)

// StartRequest is the body of POST /v1/executions.
type StartRequest struct {
	WorkflowID string          `json:"workflow_id"`
	Input      json.RawMessage `json:"input,omitempty"`
	// Priority is 0 to 100, default 0; higher runs first.
	Priority int `json:"priority,omitempty"`
	// IdempotencyKey, when set, names the execution: the same key gives the same execution.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// MaxRetries is how many automatic re-runs a retryable failure gets. Default 0.
	MaxRetries int `json:"max_retries,omitempty"`
}

// StartResponse is the answer of POST /v1/executions.
type StartResponse struct {
	ExecutionID string `json:"execution_id"`
	// Created is false when the idempotency key named an execution that existed already.
	Created bool `json:"created"`
}

// EventList is the answer of GET /v1/executions/{id}/events: a page of the CloudEvents
// envelopes, in stream order.
type EventList struct {
	Events []json.RawMessage `json:"events"`
	// Next, when set, is the after of the next page: the history held more events when this
	// page was read. Absent on the last page.
	Next string `json:"next,omitempty"`
}

// ActionRequest is the optional body of POST /v1/executions/{id}/cancel.
type ActionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ActionResponse is the answer of cancel and retry: the request is queued on the execution's
// inbox; follow the execution to see its effect.
type ActionResponse struct {
	ExecutionID string `json:"execution_id"`
	Requested   string `json:"requested"` // cancel | retry
}

// MaxReasonLength bounds a cancel reason.
const MaxReasonLength = 1024

func (a *API) engine() (Engine, error) {
	if a.cfg.Engine == nil {
		return nil, errNoEngine
	}
	return a.cfg.Engine, nil
}

// decodeBody decodes a JSON body strictly into v: unknown fields and trailing data are
// errors. An empty body leaves v as it is when optional.
func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return badRequest("the body is empty: send a JSON object")
	}
	if err := checkContentType(r, jsonTypes...); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("body: trailing data after the JSON object")
	}
	return nil
}

func (a *API) startExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req StartRequest
	if err := a.decodeBody(w, r, &req, false); err != nil {
		a.fail(w, r, err)
		return
	}
	switch {
	case req.WorkflowID == "":
		err = badRequest("workflow_id is required")
	case req.Priority < definitions.MinPriority || req.Priority > definitions.MaxPriority:
		err = badRequest("priority %d is not within %d to %d", req.Priority, definitions.MinPriority, definitions.MaxPriority)
	case req.MaxRetries < 0 || req.MaxRetries > engine.MaxRetriesLimit:
		err = badRequest("max_retries %d is not within 0 to %d", req.MaxRetries, engine.MaxRetriesLimit)
	case len(req.IdempotencyKey) > events.MaxTokenLength:
		err = badRequest("idempotency_key has %d bytes, at most %d allowed", len(req.IdempotencyKey), events.MaxTokenLength)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id, created, err := eng.Start(r.Context(), engine.StartRequest{
		WorkflowID:     req.WorkflowID,
		Input:          req.Input,
		Priority:       req.Priority,
		IdempotencyKey: req.IdempotencyKey,
		MaxRetries:     req.MaxRetries,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, StartResponse{ExecutionID: id, Created: created})
}

func (a *API) getExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	s, err := eng.Execution(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *API) executionEvents(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	limit := engine.DefaultHistoryPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > engine.MaxHistoryPage {
			a.fail(w, r, badRequest("limit %q: want 1 to %d", v, engine.MaxHistoryPage))
			return
		}
		limit = n
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			a.fail(w, r, badRequest("after %q: want the next cursor of a previous page", v))
			return
		}
		after = n
	}
	page, err := eng.HistoryPage(r.Context(), r.PathValue("id"), after, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list := EventList{Events: make([]json.RawMessage, len(page.Events))}
	if page.Next != 0 {
		list.Next = strconv.FormatUint(page.Next, 10)
	}
	for i, ev := range page.Events {
		b, err := events.Marshal(ev)
		if err != nil {
			a.fail(w, r, fmt.Errorf("event %d of %s: %w", i, r.PathValue("id"), err))
			return
		}
		list.Events[i] = b
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *API) cancelExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req ActionRequest
	if err := a.decodeBody(w, r, &req, true); err != nil {
		a.fail(w, r, err)
		return
	}
	if len(req.Reason) > MaxReasonLength {
		a.fail(w, r, badRequest("reason has %d bytes, at most %d allowed", len(req.Reason), MaxReasonLength))
		return
	}
	id := r.PathValue("id")
	if err := eng.Cancel(r.Context(), id, req.Reason); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ActionResponse{ExecutionID: id, Requested: "cancel"})
}

func (a *API) retryExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req struct{}
	if err := a.decodeBody(w, r, &req, true); err != nil {
		a.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := eng.Retry(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ActionResponse{ExecutionID: id, Requested: "retry"})
}
