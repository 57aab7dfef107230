package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/tracing"
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
	ctx := r.Context()
	if a.tracer.On() {
		// The engine puts this span's trace context on the queued event: the execution's
		// spans are its children, in the caller's trace when the request has a traceparent.
		var span trace.Span
		ctx, span = a.tracer.Start(tracing.ExtractHTTP(ctx, r.Header), "execution start", nil,
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(tracing.WorkflowID.String(req.WorkflowID)))
		defer span.End()
	}
	id, created, err := eng.Start(ctx, engine.StartRequest{
		WorkflowID:     req.WorkflowID,
		Input:          req.Input,
		Priority:       req.Priority,
		IdempotencyKey: req.IdempotencyKey,
		MaxRetries:     req.MaxRetries,
	})
	span := trace.SpanFromContext(ctx) // a no-op one when the tracer is off
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		a.fail(w, r, err)
		return
	}
	span.SetAttributes(tracing.ExecutionID.String(id))
	writeJSON(w, http.StatusAccepted, StartResponse{ExecutionID: id, Created: created})
}

// getExecution answers from the projections when they have applied every event of the
// execution that the stream held when the request came (see projectedExecution), and from
// the stream otherwise: either answer is as fresh as the stream was then. The Memmie-Source
// header says which answered. With ?wait=D it waits (waitExecution).
func (a *API) getExecution(w http.ResponseWriter, r *http.Request) {
	eng, err := a.engine()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	if r.URL.Query().Has("wait") {
		a.waitExecution(w, r, eng, id)
		return
	}
	if a.cfg.Views == nil && a.states == nil {
		a.foldedExecution(w, r, eng, id)
		return
	}
	// The last sequence both decides whether the projections are fresh enough and validates
	// the cached state.
	seq, err := eng.ExecutionSeq(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if a.cfg.Views != nil {
		v, err := a.projectedExecution(r.Context(), id, seq)
		switch {
		case err == nil:
			w.Header().Set(SourceHeader, SourceProjection)
			writeJSON(w, http.StatusOK, v)
			return
		case errors.Is(err, views.ErrBehind):
			// Accepted a moment ago, or the projections catch up: the stream answers.
		default:
			// Postgres down, most likely: /readyz and the projections' runners say so loudly,
			// and every GET would repeat it.
			a.log.Debug("read an execution from the projections; answering from the stream", "execution_id", id, "err", err)
		}
	}
	if a.states == nil {
		a.foldedExecution(w, r, eng, id)
		return
	}
	ans, err := a.states.read(r.Context(), id, seq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set(SourceHeader, SourceStream)
	writeRaw(w, http.StatusOK, ans.body)
}

// foldedExecution answers the state folded from the whole history, without Config.JetStream.
func (a *API) foldedExecution(w http.ResponseWriter, r *http.Request, eng Engine, id string) {
	s, err := eng.Execution(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set(SourceHeader, SourceStream)
	writeJSON(w, http.StatusOK, s)
}

// The header of GET /v1/executions/{id} that says what answered, and its values.
const (
	SourceHeader     = "Memmie-Source"
	SourceProjection = "projection"
	SourceStream     = "stream"
)

// ExecutionView is GET /v1/executions/{id} answered from the projections: the fields of the
// execution's state (execution.State's JSON, which the stream's answer is) that the
// projections hold, under the same names, plus updated_at and step_attempts, every attempt
// of every step with its duration.
type ExecutionView struct {
	ExecutionID      string          `json:"execution_id"`
	WorkflowID       string          `json:"workflow_id"`
	WorkflowRevision int             `json:"workflow_revision"`
	ProviderID       string          `json:"provider_id,omitempty"`
	BlobID           string          `json:"blob_id,omitempty"`
	SourceEventID    string          `json:"source_event_id,omitempty"`
	Priority         int             `json:"priority"`
	MaxRetries       int             `json:"max_retries"`
	Input            json.RawMessage `json:"input"`
	QueuedAt         time.Time       `json:"queued_at"`
	Status           string          `json:"status"`
	Run              int             `json:"run"`
	RetryCount       int             `json:"retry_count"`
	StartedAt        *time.Time      `json:"started_at,omitempty"`
	EndedAt          *time.Time      `json:"ended_at,omitempty"`
	Steps            []StepView      `json:"steps"`
	Output           json.RawMessage `json:"output,omitempty"`
	Error            json.RawMessage `json:"error,omitempty"`
	// DeltasRejected is as the stream's answer has it: why the completed run's output was not
	// written on its blob.
	DeltasRejected *execution.DeltasRejection `json:"deltas_rejected,omitempty"`
	UpdatedAt      time.Time                  `json:"updated_at"`
	// StepAttempts are the execution_steps rows, by run, step, compensation and attempt.
	StepAttempts []views.StepAttempt `json:"step_attempts"`
}

// AttemptsView is where a step, or its compensation, stands: its last attempt.
type AttemptsView struct {
	// Status is as the stream's answer names it: pending, scheduled, retry_scheduled,
	// succeeded, failed or skipped (an attempt timed out is failed, its error says why).
	Status  string `json:"status"`
	Attempt int    `json:"attempts"`
	// Request is a summary of the attempt's request (service, method, path, body size), not
	// the request itself.
	Request    json.RawMessage `json:"request,omitempty"`
	Error      json.RawMessage `json:"error,omitempty"`
	DurationMS *int64          `json:"duration_ms,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	EndedAt    *time.Time      `json:"ended_at,omitempty"`
}

// StepView is one step of an ExecutionView, as execution.Step names its fields.
type StepView struct {
	ID string `json:"id"`
	AttemptsView
	// Run is the run that recorded the step's last attempt.
	Run    int             `json:"run,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
	// Compensation is the step's compensation in the current run, if it has one.
	Compensation *AttemptsView `json:"compensation,omitempty"`
}

// projectedExecution reads an execution from the projections, provided that they have
// applied its history up to seq, its last message on the stream leader; views.ErrBehind when
// they have not.
func (a *API) projectedExecution(ctx context.Context, id string, seq uint64) (*ExecutionView, error) {
	d, err := a.cfg.Views.ExecutionDetail(ctx, id, seq)
	if err != nil {
		return nil, err
	}
	var wf *definitions.Workflow
	if rev, ok := a.cfg.Registry.Get(definitions.KindWorkflow, d.WorkflowID, d.WorkflowRevision); ok {
		wf, _ = rev.Def.(*definitions.Workflow)
	}
	input := d.Input
	if input == nil {
		input = json.RawMessage("null")
	}
	errJSON := d.Error
	switch execution.Status(d.Status) {
	case execution.StatusQueued, execution.StatusRunning, execution.StatusCompensating:
		// The row keeps the last run's error while a re-run runs; the state does not.
		errJSON = nil
	}
	var rejected *execution.DeltasRejection
	if d.DeltasRejected != nil {
		// Decoded and encoded again: jsonb keeps neither the keys' order nor their spacing.
		rejected = new(execution.DeltasRejection)
		if err := json.Unmarshal(d.DeltasRejected, rejected); err != nil {
			return nil, fmt.Errorf("read execution %s: deltas_rejected: %w", id, err)
		}
	}
	return &ExecutionView{
		ExecutionID: d.ExecutionID, WorkflowID: d.WorkflowID, WorkflowRevision: d.WorkflowRevision,
		ProviderID: d.ProviderID, BlobID: d.BlobID, SourceEventID: d.SourceEventID, Priority: d.Priority,
		MaxRetries: d.MaxRetries, Input: input, QueuedAt: d.QueuedAt, Status: d.Status, Run: d.Run,
		RetryCount: d.RetryCount, StartedAt: d.StartedAt, EndedAt: d.EndedAt, Steps: stepViews(d, wf),
		Output: d.Output, Error: errJSON, DeltasRejected: rejected, UpdatedAt: d.UpdatedAt, StepAttempts: d.Attempts,
	}, nil
}

// stepViews tells where each step stands from its attempts, as the core's state would: the
// steps of the workflow (wf, when the registry has its revision) in its order, then any
// other step with attempts. A step's last attempt is its highest run and attempt; one from
// an earlier run stands only if the re-run kept its result (succeeded and not compensated,
// skipped, or failed with on_failure: continue), else the step is pending again.
func stepViews(d *views.ExecutionDetail, wf *definitions.Workflow) []StepView {
	later := func(a, b *views.StepAttempt) bool { return a.Run > b.Run || (a.Run == b.Run && a.Attempt > b.Attempt) }
	main := map[string]*views.StepAttempt{}
	comp := map[string]*views.StepAttempt{}
	// compensated: a compensation succeeded in each run, by step.
	compensated := map[string][]int{}
	var order []string
	known := map[string]bool{}
	continues := map[string]bool{}
	if wf != nil {
		for _, s := range wf.Steps {
			order, known[s.ID] = append(order, s.ID), true
			continues[s.ID] = s.FailureAction() == definitions.OnFailureContinue
		}
	}
	for i := range d.Attempts {
		a := &d.Attempts[i]
		if !known[a.StepID] {
			order, known[a.StepID] = append(order, a.StepID), true
		}
		if a.Compensation {
			if a.Status == "succeeded" {
				compensated[a.StepID] = append(compensated[a.StepID], a.Run)
			}
			if a.Run == d.Run && (comp[a.StepID] == nil || later(a, comp[a.StepID])) {
				comp[a.StepID] = a
			}
			continue
		}
		if main[a.StepID] == nil || later(a, main[a.StepID]) {
			main[a.StepID] = a
		}
	}
	out := make([]StepView, 0, len(order))
	for _, id := range order {
		v := StepView{ID: id, AttemptsView: AttemptsView{Status: "pending"}}
		m := main[id]
		if m != nil && m.Run < d.Run {
			kept := m.Status == "skipped" || (m.Status == "succeeded" && !slices.ContainsFunc(compensated[id],
				func(run int) bool { return run >= m.Run && run < d.Run })) ||
				((m.Status == "failed" || m.Status == "timed_out") && continues[id])
			if !kept {
				m = nil
			}
		}
		if m != nil {
			v.AttemptsView, v.Run = attemptsView(m), m.Run
			if m.Status != "skipped" { // a skip's row holds its reason, which step_attempts shows
				v.Output = m.Output
			}
		}
		if c := comp[id]; c != nil {
			cv := attemptsView(c)
			v.Compensation = &cv
		}
		out = append(out, v)
	}
	return out
}

func attemptsView(a *views.StepAttempt) AttemptsView {
	status := a.Status
	if status == "timed_out" {
		status = "failed"
	}
	return AttemptsView{Status: status, Attempt: a.Attempt, Request: a.Request, Error: a.Error,
		DurationMS: a.DurationMS, StartedAt: a.StartedAt, EndedAt: a.EndedAt}
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
