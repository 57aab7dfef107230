package execution

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/definitions/eval"
	"github.com/memmie/memmie/events"
)

// Status is where an execution stands.
type Status string

const (
	// StatusQueued: a run waits for the dispatcher (the first one, or a re-run).
	StatusQueued Status = "queued"
	// StatusRunning: steps run.
	StatusRunning Status = "running"
	// StatusCompensating: the run stops early and undoes what succeeded, in reverse order.
	StatusCompensating Status = "compensating"
	// StatusRetryScheduled: a run failed and an automatic re-run waits for its timer.
	StatusRetryScheduled Status = "retry_scheduled"
	StatusCompleted      Status = "completed"
	StatusFailed         Status = "failed"
	StatusCancelled      Status = "cancelled"
)

// Terminal reports whether the execution has ended. A failed execution may still be retried.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// StepStatus is where a step, or its compensation, stands in the current run.
type StepStatus string

const (
	StepPending StepStatus = "pending"
	// StepScheduled: an attempt is in flight.
	StepScheduled StepStatus = "scheduled"
	// StepReported: the attempt's report (or timeout) is recorded and waits for Decide. Only
	// seen between Apply and the application of the decisions taken on it.
	StepReported       StepStatus = "reported"
	StepRetryScheduled StepStatus = "retry_scheduled"
	StepSucceeded      StepStatus = "succeeded"
	StepFailed         StepStatus = "failed"
	StepSkipped        StepStatus = "skipped"
)

// MaxStale bounds the stale events a state lists; StaleCount counts them all.
const MaxStale = 16

// Attempts tracks the attempts of a step, or of its compensation, in the current run.
type Attempts struct {
	Status StepStatus `json:"status"`
	// Attempt is the current or last attempt, from 1; 0 when none was made.
	Attempt int `json:"attempts"`
	// Request is the attempt's resolved request; each retry sends it again.
	Request *events.Request `json:"request,omitempty"`
	// Deadline is when the attempt in flight times out.
	Deadline time.Time `json:"deadline,omitzero"`
	// Report is the attempt's outcome, while it waits for a decision.
	Report *events.Response `json:"report,omitempty"`
	// RetryAt is when the next attempt is due; RetryDue says its timer fired.
	RetryAt  time.Time         `json:"retry_at,omitzero"`
	RetryDue bool              `json:"retry_due,omitempty"`
	Error    *events.StepError `json:"error,omitempty"`
	// Retryable is whether the final error was of a retryable kind.
	Retryable bool `json:"retryable,omitempty"`
}

// Step is the state of one step.
type Step struct {
	ID string `json:"id"`
	Attempts
	// Run is the run that recorded the step's result; a re-run reuses results of earlier runs.
	Run    int `json:"run,omitempty"`
	Output any `json:"output,omitempty"`
	// Stopped says the step failed because the run stopped (a cancel, the deadline) while it
	// waited for a retry.
	Stopped bool `json:"stopped,omitempty"`
	// Generation counts how often a succeeded, then compensated, step was reset to run again.
	// It makes the idempotency keys of the new effect differ from the undone one's.
	Generation int `json:"generation,omitempty"`
	// Compensation is nil until the step's compensation is scheduled in this run.
	Compensation *Attempts `json:"compensation,omitempty"`
}

// Stop says why a run stops early and how it will end (from execution.compensating).
type Stop struct {
	Outcome   events.Outcome         `json:"outcome"`
	Error     *events.ExecutionError `json:"error,omitempty"`
	Retryable bool                   `json:"retryable"`
}

// StaleEvent is an input that arrived when it no longer applied: a report for an attempt that
// timed out or already has a result, a timer of a past attempt, a cancel of an ended execution.
type StaleEvent struct {
	ID     string      `json:"id"`
	Type   events.Type `json:"type"`
	Reason string      `json:"reason"`
}

// DeltasRejection says why a completed execution's output was not written on its blob.
type DeltasRejection struct {
	BlobID string `json:"blob_id"`
	// BlobVersion is the blob's version the output was judged against.
	BlobVersion int64 `json:"blob_version"`
	// Item names what could not apply, such as delta_operations[2].
	Item       string    `json:"item"`
	Reason     string    `json:"reason"`
	RejectedAt time.Time `json:"rejected_at"`
}

// State is an execution's state: a fold over its events. Its JSON form is the view the API
// serves. Fold and Apply build it; Decide reads it.
type State struct {
	ExecutionID      string    `json:"execution_id"`
	WorkflowID       string    `json:"workflow_id"`
	WorkflowRevision int       `json:"workflow_revision"`
	ProviderID       string    `json:"provider_id,omitempty"`
	BlobID           string    `json:"blob_id,omitempty"`
	SourceEventID    string    `json:"source_event_id,omitempty"`
	IdempotencyKey   string    `json:"idempotency_key,omitempty"`
	Priority         int       `json:"priority"`
	MaxRetries       int       `json:"max_retries"`
	Seed             int64     `json:"seed"`
	Input            any       `json:"input"`
	QueuedAt         time.Time `json:"queued_at"`
	// BaseVersion and Trigger are a triggered execution's: the blob version its input read
	// (the blob's deltas record it) and the provider's trigger that matched.
	BaseVersion int64  `json:"base_version,omitempty"`
	Trigger     string `json:"trigger,omitempty"`

	Status Status `json:"status"`
	// Run counts from 1; a manual or automatic retry starts the next one.
	Run int `json:"run"`
	// RetryCount counts the automatic re-runs so far.
	RetryCount int       `json:"retry_count"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	// Deadline is when the current run's workflow timeout runs out.
	Deadline time.Time `json:"deadline,omitzero"`
	Steps    []Step    `json:"steps"`

	CancelRequested  bool   `json:"cancel_requested,omitempty"`
	CancelReason     string `json:"cancel_reason,omitempty"`
	DeadlineExceeded bool   `json:"deadline_exceeded,omitempty"`
	// StartError is set when a run starts with an invalid input or workflow; it fails at once.
	StartError *events.ExecutionError `json:"start_error,omitempty"`
	// Stop is set while the run compensates, and stays after it ended.
	Stop *Stop `json:"stop,omitempty"`

	// RetryAt is when the automatic re-run is due; RetryDue says its timer fired.
	RetryAt  time.Time `json:"retry_at,omitzero"`
	RetryDue bool      `json:"retry_due,omitempty"`
	// RetryRequested is a manual retry of the failed run that waits for its decision.
	RetryRequested bool `json:"retry_requested,omitempty"`

	Output             any                    `json:"output,omitempty"`
	Error              *events.ExecutionError `json:"error,omitempty"`
	Retryable          bool                   `json:"retryable,omitempty"`
	CompensationFailed bool                   `json:"compensation_failed,omitempty"`
	// DefinitionError says why the pinned workflow or schemas could not be compiled.
	DefinitionError string `json:"definition_error,omitempty"`
	// DeltasRejected is set when the completed run's output could not be written on its blob
	// (events.DeltasRejected): nothing of it is on the blob. The status stays completed.
	DeltasRejected *DeltasRejection `json:"deltas_rejected,omitempty"`

	StaleCount int          `json:"stale_count"`
	Stale      []StaleEvent `json:"stale,omitempty"`
	// Events counts the events applied.
	Events int `json:"events"`
	// history measures the recorded history, which Decide bounds (see MaxHistoryEvents).
	history HistorySize

	workflow     *definitions.Workflow
	inputSchema  *definitions.Schema
	outputSchema *definitions.Schema
	// compiler compiles what the queued event pins; nil means Compile.
	compiler Compiler
}

// Pinned is what an execution's queued event pins, decoded and compiled: the workflow and its
// input and output schemas (nil when it has none). It may be shared by many states: never
// change it.
type Pinned struct {
	Workflow      *definitions.Workflow
	Input, Output *definitions.Schema
}

// Compiler gives what a queued event pins. It must return what Compile returns for the same
// event: a cache of Compile's results (the runtime keeps one, by workflow revision) saves
// compiling a revision for every execution, and changes no decision.
type Compiler interface {
	Compile(q *events.ExecutionQueued) (*Pinned, error)
}

// SetCompiler makes the state compile the workflow its queued event pins with c; nil means
// Compile. Clones keep it.
func (s *State) SetCompiler(c Compiler) { s.compiler = c }

// Fold builds the state from an execution's history, in stream order.
func Fold(history []events.Event) (State, error) { return FoldWith(nil, history) }

// FoldWith is Fold with the pinned workflow compiled by c (see SetCompiler).
func FoldWith(c Compiler, history []events.Event) (State, error) {
	s := State{compiler: c}
	for i, ev := range history {
		if err := s.Apply(ev); err != nil {
			return s, fmt.Errorf("fold event %d: %w", i, err)
		}
	}
	return s, nil
}

// Apply applies one event. An input that no longer applies (a late report, a stale timer, a
// cancel of an ended execution) changes nothing but the stale list. A decision that does not fit
// the state, an event of another execution or an unknown type is an error: the history is
// inconsistent.
func (s *State) Apply(ev events.Event) error {
	first, stale := s.ExecutionID == "", s.StaleCount
	if err := s.apply(ev); err != nil {
		return fmt.Errorf("apply %s %s: %w", ev.Type, ev.ID, err)
	}
	s.Events++
	if first || s.StaleCount == stale {
		// A stale input is not recorded. (The first event resets the state, stale count included.)
		s.history.Events++
		s.history.Bytes += encodedSize(ev)
	}
	return nil
}

func (s *State) apply(ev events.Event) error {
	if s.ExecutionID == "" {
		q, ok := ev.Data.(*events.ExecutionQueued)
		if !ok {
			return fmt.Errorf("an execution's history starts with %s", events.TypeExecutionQueued)
		}
		s.queued(q, ev.Time)
		return nil
	}
	if id := ev.ExecutionID(); id != s.ExecutionID {
		return fmt.Errorf("event of execution %q in the history of %q", id, s.ExecutionID)
	}
	switch d := ev.Data.(type) {
	case *events.ExecutionQueued:
		s.stale(ev, "the execution is already queued")
	case *events.ExecutionStarted:
		s.started(ev, d)
	case *events.StepReported:
		s.reported(ev, d.AttemptRef, d.Response, false)
	case *events.CompensationReported:
		s.reported(ev, d.AttemptRef, d.Response, true)
	case *events.TimerFired:
		s.timerFired(ev, d)
	case *events.CancelRequested:
		s.cancelRequested(ev, d)
	case *events.RetryRequested:
		s.retryRequested(ev, d)
	case *events.DeltasRejected:
		s.deltasRejected(ev, d)

	case *events.StepScheduled:
		return s.attemptScheduled(d.AttemptRef, d.Request, d.Deadline, false)
	case *events.CompensationScheduled:
		return s.attemptScheduled(d.AttemptRef, d.Request, d.Deadline, true)
	case *events.StepSucceeded:
		st, err := s.stepFor(d.Run, d.StepID)
		if err != nil {
			return err
		}
		st.Attempts = Attempts{Status: StepSucceeded, Attempt: d.Attempt}
		st.Run, st.Output = d.Run, d.Output
	case *events.StepFailed:
		st, err := s.stepFor(d.Run, d.StepID)
		if err != nil {
			return err
		}
		st.Attempts = Attempts{Status: StepFailed, Attempt: d.Attempt, Error: &d.Error, Retryable: d.Retryable}
		st.Run, st.Output = d.Run, nil
	case *events.StepRetryScheduled:
		return s.retryScheduled(d.AttemptRef, d.Error, d.DueAt, false)
	case *events.CompensationRetryScheduled:
		return s.retryScheduled(d.AttemptRef, d.Error, d.DueAt, true)
	case *events.StepSkipped:
		st, err := s.stepFor(d.Run, d.StepID)
		if err != nil {
			return err
		}
		st.Attempts = Attempts{Status: StepSkipped}
		st.Run, st.Output = d.Run, nil
	case *events.CompensationSucceeded:
		st, err := s.stepFor(d.Run, d.StepID)
		if err != nil {
			return err
		}
		st.Compensation = &Attempts{Status: StepSucceeded, Attempt: d.Attempt}
	case *events.CompensationFailed:
		st, err := s.stepFor(d.Run, d.StepID)
		if err != nil {
			return err
		}
		st.Compensation = &Attempts{Status: StepFailed, Attempt: d.Attempt, Error: &d.Error, Retryable: d.Retryable}
		s.CompensationFailed = true

	case *events.ExecutionCompensating:
		if err := s.expect(d.Run, StatusRunning); err != nil {
			return err
		}
		s.Status = StatusCompensating
		s.Stop = &Stop{Outcome: d.Outcome, Error: d.Error, Retryable: d.Retryable}
		for i := range s.Steps {
			if st := &s.Steps[i]; st.Status == StepRetryScheduled {
				// Its remaining attempts will not be made: it fails with its last error.
				st.Status, st.Retryable, st.Stopped = StepFailed, true, true
				st.RetryAt, st.RetryDue = time.Time{}, false
			}
		}
	case *events.ExecutionCompleted:
		if err := s.expect(d.Run, StatusRunning); err != nil {
			return err
		}
		s.Status, s.Output, s.EndedAt = StatusCompleted, d.Output, ev.Time
	case *events.ExecutionFailed:
		if err := s.expect(d.Run, StatusRunning, StatusCompensating); err != nil {
			return err
		}
		s.Status, s.EndedAt = StatusFailed, ev.Time
		s.Error, s.CompensationFailed, s.Retryable = &d.Error, d.CompensationFailed, d.Retryable
	case *events.ExecutionCancelled:
		run := d.Run
		if s.Status == StatusRetryScheduled {
			run-- // it ends the run that waited to be queued
		}
		if err := s.expect(run, StatusQueued, StatusCompensating, StatusRetryScheduled); err != nil {
			return err
		}
		s.Status, s.Run, s.EndedAt = StatusCancelled, d.Run, ev.Time
	case *events.ExecutionRetryScheduled:
		if err := s.expect(d.Run, StatusCompensating); err != nil {
			return err
		}
		s.Status, s.Error, s.RetryAt = StatusRetryScheduled, &d.Error, d.DueAt
	case *events.ExecutionRequeued:
		if err := s.expect(d.Run-1, StatusFailed, StatusRetryScheduled); err != nil {
			return err
		}
		s.requeued(d)
	default:
		return fmt.Errorf("unknown event type %q", ev.Type)
	}
	return nil
}

func (s *State) queued(q *events.ExecutionQueued, at time.Time) {
	*s = State{
		ExecutionID:      q.ExecutionID,
		WorkflowID:       q.WorkflowID,
		WorkflowRevision: q.WorkflowRevision,
		ProviderID:       q.ProviderID,
		BlobID:           q.BlobID,
		SourceEventID:    q.SourceEventID,
		BaseVersion:      q.BaseVersion,
		Trigger:          q.Trigger,
		IdempotencyKey:   q.IdempotencyKey,
		Priority:         q.Priority,
		MaxRetries:       q.MaxRetries,
		Seed:             q.Seed,
		Input:            q.Input,
		QueuedAt:         at,
		Status:           StatusQueued,
		Run:              1,
		Steps:            []Step{},
		compiler:         s.compiler,
	}
	var p *Pinned
	var err error
	if s.compiler != nil {
		p, err = s.compiler.Compile(q)
	} else {
		p, err = Compile(q)
	}
	if err != nil {
		s.DefinitionError = err.Error()
		return
	}
	wf := p.Workflow
	s.workflow, s.inputSchema, s.outputSchema = wf, p.Input, p.Output
	if s.ProviderID == "" {
		s.ProviderID = wf.ProviderID
	}
	for _, st := range wf.Steps {
		s.Steps = append(s.Steps, Step{ID: st.ID, Attempts: Attempts{Status: StepPending}})
	}
}

// Compile decodes and compiles the workflow and schemas that a queued event pins.
func Compile(q *events.ExecutionQueued) (*Pinned, error) {
	var wf definitions.Workflow
	if err := json.Unmarshal(q.Workflow, &wf); err != nil {
		return nil, fmt.Errorf("decode workflow %s revision %d: %w", q.WorkflowID, q.WorkflowRevision, err)
	}
	if err := wf.Compile(); err != nil {
		return nil, fmt.Errorf("compile workflow %s revision %d: %w", q.WorkflowID, q.WorkflowRevision, err)
	}
	in, err := pinnedSchema(q.InputSchema)
	if err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	out, err := pinnedSchema(q.OutputSchema)
	if err != nil {
		return nil, fmt.Errorf("output schema: %w", err)
	}
	return &Pinned{Workflow: &wf, Input: in, Output: out}, nil
}

func pinnedSchema(raw json.RawMessage) (*definitions.Schema, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var sc definitions.Schema
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := sc.Compile(); err != nil {
		return nil, fmt.Errorf("compile %s: %w", sc.ID, err)
	}
	return &sc, nil
}

func (s *State) started(ev events.Event, d *events.ExecutionStarted) {
	if s.Status != StatusQueued || d.Run != s.Run {
		s.stale(ev, fmt.Sprintf("run %d does not wait to start (run %d is %s)", d.Run, s.Run, s.Status))
		return
	}
	s.Status, s.StartedAt = StatusRunning, ev.Time
	s.Deadline = d.Deadline
	if s.Deadline.IsZero() {
		s.Deadline = ev.Time.Add(s.workflowTimeout())
	}
	switch {
	case s.DefinitionError != "":
		s.StartError = &events.ExecutionError{Code: events.CodeDefinitionInvalid, Message: s.DefinitionError}
	case s.inputSchema != nil:
		if err := s.inputSchema.Compiled.Validate(s.Input); err != nil {
			s.StartError = schemaError(events.CodeInputInvalid, "input", err)
		}
	}
}

// schemaError turns a schema violation into the execution's error, listing every problem.
func schemaError(code, what string, err error) *events.ExecutionError {
	e := &events.ExecutionError{Code: code, Message: fmt.Sprintf("%s: %v", what, err)}
	var verr *eval.ValidationError
	if errors.As(err, &verr) {
		e.Details = map[string]any{"schema_id": verr.SchemaID, "problems": verr.Problems}
	}
	return e
}

func (s *State) workflowTimeout() time.Duration {
	if s.workflow != nil && s.workflow.TimeoutSeconds > 0 {
		return time.Duration(s.workflow.TimeoutSeconds) * time.Second
	}
	return definitions.DefaultWorkflowTimeoutSeconds * time.Second
}

// reported records the report of a step or compensation attempt if that attempt is in flight.
func (s *State) reported(ev events.Event, ref events.AttemptRef, r events.Response, compensation bool) {
	a := s.attempts(ref, compensation)
	if a == nil || a.Status != StepScheduled || a.Attempt != ref.Attempt {
		s.stale(ev, fmt.Sprintf("attempt %d of %s in run %d is not in flight", ref.Attempt, ref.StepID, ref.Run))
		return
	}
	a.Status, a.Report = StepReported, &r
}

func (s *State) timerFired(ev events.Event, d *events.TimerFired) {
	ref := events.AttemptRef{Run: d.Run, StepID: d.StepID, Attempt: d.Attempt}
	switch d.Kind {
	case events.TimerStepTimeout, events.TimerCompensationTimeout:
		a := s.attempts(ref, d.Kind == events.TimerCompensationTimeout)
		if a == nil || a.Status != StepScheduled || a.Attempt != d.Attempt {
			s.stale(ev, fmt.Sprintf("attempt %d of %s in run %d is not in flight", d.Attempt, d.StepID, d.Run))
			return
		}
		a.Status = StepReported
		a.Report = &events.Response{ErrorKind: events.ErrorTimeout, Error: DeadlinePassed}
	case events.TimerStepRetry, events.TimerCompensationRetry:
		a := s.attempts(ref, d.Kind == events.TimerCompensationRetry)
		if a == nil || a.Status != StepRetryScheduled || a.Attempt+1 != d.Attempt || a.RetryDue {
			s.stale(ev, fmt.Sprintf("attempt %d of %s in run %d is not waiting", d.Attempt, d.StepID, d.Run))
			return
		}
		a.RetryDue = true
	case events.TimerExecutionDeadline:
		if d.Run != s.Run || s.Status != StatusRunning || s.DeadlineExceeded {
			s.stale(ev, fmt.Sprintf("run %d is not running (run %d is %s)", d.Run, s.Run, s.Status))
			return
		}
		s.DeadlineExceeded = true
	case events.TimerExecutionRetry:
		if d.Run != s.Run || s.Status != StatusRetryScheduled || s.RetryDue {
			s.stale(ev, fmt.Sprintf("run %d does not wait for a retry (run %d is %s)", d.Run, s.Run, s.Status))
			return
		}
		s.RetryDue = true
	default:
		s.stale(ev, fmt.Sprintf("unknown timer kind %q", d.Kind))
	}
}

func (s *State) cancelRequested(ev events.Event, d *events.CancelRequested) {
	switch {
	case s.Status.Terminal():
		s.stale(ev, "the execution is "+string(s.Status))
	case s.CancelRequested:
		s.stale(ev, "a cancel is already requested")
	default:
		s.CancelRequested, s.CancelReason = true, d.Reason
	}
}

func (s *State) retryRequested(ev events.Event, d *events.RetryRequested) {
	switch {
	case s.Status != StatusFailed:
		s.stale(ev, "the execution is "+string(s.Status)+", not failed")
	case d.Run != 0 && d.Run != s.Run:
		s.stale(ev, fmt.Sprintf("run %d is not the failed run %d", d.Run, s.Run))
	case s.RetryRequested:
		s.stale(ev, "a retry is already requested")
	case s.historyFull():
		s.stale(ev, fmt.Sprintf("the history has reached its bounds (%d events, %d bytes): no run can start",
			historyLimit.Events, historyLimit.Bytes))
	default:
		s.RetryRequested = true
	}
}

// deltasRejected records the rejection of a completed run's output. The run keeps its status:
// its workflow succeeded, and a completed execution is never re-run; only its blob lacks the
// output. One rejection per run is recorded.
func (s *State) deltasRejected(ev events.Event, d *events.DeltasRejected) {
	switch {
	case s.Status != StatusCompleted:
		s.stale(ev, "the execution is "+string(s.Status)+", not completed")
	case d.Run != s.Run:
		s.stale(ev, fmt.Sprintf("run %d is not the completed run %d", d.Run, s.Run))
	case s.DeltasRejected != nil:
		s.stale(ev, "a rejection of its deltas is already recorded")
	default:
		s.DeltasRejected = &DeltasRejection{BlobID: d.BlobID, BlobVersion: d.BlobVersion, Item: d.Item,
			Reason: d.Reason, RejectedAt: ev.Time}
	}
}

func (s *State) attemptScheduled(ref events.AttemptRef, req events.Request, deadline time.Time, compensation bool) error {
	st, err := s.stepFor(ref.Run, ref.StepID)
	if err != nil {
		return err
	}
	a := Attempts{Status: StepScheduled, Attempt: ref.Attempt, Request: &req, Deadline: deadline}
	if compensation {
		st.Compensation = &a
		return nil
	}
	st.Attempts, st.Run, st.Output = a, ref.Run, nil
	return nil
}

func (s *State) retryScheduled(ref events.AttemptRef, e events.StepError, due time.Time, compensation bool) error {
	st, err := s.stepFor(ref.Run, ref.StepID)
	if err != nil {
		return err
	}
	a := &st.Attempts
	if compensation {
		if a = st.Compensation; a == nil {
			return fmt.Errorf("compensation of %s was never scheduled", ref.StepID)
		}
	}
	a.Status, a.Attempt, a.Report = StepRetryScheduled, ref.Attempt, nil
	a.Error, a.RetryAt, a.RetryDue, a.Deadline = &e, due, false, time.Time{}
	return nil
}

// requeued starts the next run. It keeps the results that stay valid (steps that succeeded and
// were not compensated, skipped steps, failures that on_failure: continue let pass) and resets
// the rest, so the run restarts at the failed step and redoes what was compensated.
func (s *State) requeued(d *events.ExecutionRequeued) {
	for i := range s.Steps {
		st := &s.Steps[i]
		keep := false
		switch st.Status {
		case StepSucceeded:
			if st.Compensation != nil && st.Compensation.Status == StepSucceeded {
				st.Generation++
			} else {
				keep = true
			}
		case StepSkipped:
			keep = true
		case StepFailed:
			keep = !st.Stopped && s.workflow.Steps[i].FailureAction() == definitions.OnFailureContinue
		}
		if keep {
			st.Compensation = nil
			continue
		}
		*st = Step{ID: st.ID, Attempts: Attempts{Status: StepPending}, Generation: st.Generation}
	}
	s.Status, s.Run, s.RetryCount = StatusQueued, d.Run, d.RetryCount
	s.StartedAt, s.EndedAt, s.Deadline = time.Time{}, time.Time{}, time.Time{}
	s.DeadlineExceeded, s.StartError, s.Stop = false, nil, nil
	s.RetryAt, s.RetryDue, s.RetryRequested = time.Time{}, false, false
	s.Output, s.Error, s.Retryable, s.CompensationFailed = nil, nil, false, false
	s.CancelRequested, s.CancelReason = false, ""
}

func (s *State) stale(ev events.Event, reason string) {
	s.StaleCount++
	s.Stale = append(s.Stale, StaleEvent{ID: ev.ID, Type: ev.Type, Reason: reason})
	if len(s.Stale) > MaxStale {
		s.Stale = slices.Delete(s.Stale, 0, len(s.Stale)-MaxStale)
	}
}

// expect checks that a run-level decision is for the current run and fits its status.
func (s *State) expect(run int, statuses ...Status) error {
	if run != s.Run {
		return fmt.Errorf("decision for run %d, the current run is %d", run, s.Run)
	}
	if !slices.Contains(statuses, s.Status) {
		return fmt.Errorf("decision for a run that is %s", s.Status)
	}
	return nil
}

// stepFor returns the step a decision is about, which must be of the current run.
func (s *State) stepFor(run int, id string) (*Step, error) {
	if run != s.Run {
		return nil, fmt.Errorf("decision for run %d, the current run is %d", run, s.Run)
	}
	if i := s.index(id); i >= 0 {
		return &s.Steps[i], nil
	}
	return nil, fmt.Errorf("no step %q in workflow %s", id, s.WorkflowID)
}

// attempts returns the attempts an input is about, or nil when it names another run or no
// known step.
func (s *State) attempts(ref events.AttemptRef, compensation bool) *Attempts {
	i := s.index(ref.StepID)
	if ref.Run != s.Run || i < 0 {
		return nil
	}
	if compensation {
		return s.Steps[i].Compensation
	}
	return &s.Steps[i].Attempts
}

func (s *State) index(id string) int {
	for i := range s.Steps {
		if s.Steps[i].ID == id {
			return i
		}
	}
	return -1
}

// Clone returns a copy that Apply can change without touching s: keep one to roll back to when
// an append fails.
func (s *State) Clone() State {
	c := *s
	c.Steps = slices.Clone(s.Steps)
	for i := range c.Steps {
		if comp := c.Steps[i].Compensation; comp != nil {
			cc := *comp
			c.Steps[i].Compensation = &cc
		}
	}
	c.Stale = slices.Clone(s.Stale)
	return c
}

// Workflow returns the pinned workflow, or nil when it could not be compiled. It is shared:
// do not change it.
func (s *State) Workflow() *definitions.Workflow { return s.workflow }

// Bounds of an execution's recorded history. A run that reaches either bound stops with
// CodeHistoryTooLarge: it compensates like any failure and fails, without automatic re-runs.
// Its compensations and its end are written past the bound, so that an execution always ends;
// they are bounded by the compensations' retry policies. The bounds are constants of the core,
// not settings: every process and every replay must take the same decision on one history.
//
// Each is a fifth of Temporal's (50,000 events, 50 MB): a cache miss folds the whole history
// (an ordered consumer over the execution's subjects) and holds it in memory while it decides,
// and a history this long is a loop in all but name. A run of 100 steps (definitions.MaxSteps)
// without retries writes some 300 events, 600 with a compensation for each.
const (
	MaxHistoryEvents = 10_000
	MaxHistoryBytes  = 10 << 20
)

// CodeHistoryTooLarge is the error code of an execution whose history reached its bounds.
const CodeHistoryTooLarge = "history_too_large"

// HistorySize measures an execution's recorded history: its events, and the bytes of their
// encoding (events.Marshal, the bytes the runtime appends).
type HistorySize struct {
	Events int
	Bytes  int64
}

// reaches reports whether h reaches either bound of limit.
func (h HistorySize) reaches(limit HistorySize) bool {
	return h.Events >= limit.Events || h.Bytes >= limit.Bytes
}

// historyLimit is MaxHistoryEvents and MaxHistoryBytes; tests of this package lower it.
var historyLimit = HistorySize{Events: MaxHistoryEvents, Bytes: MaxHistoryBytes}

// History returns the size of the recorded history: the events applied, but stale inputs,
// which change nothing and which the runtime does not record.
func (s *State) History() HistorySize { return s.history }

// HistoryWarning reports whether the history has reached half its bounds: the runtime logs a
// warning when an append takes it there.
func (s *State) HistoryWarning() bool {
	return s.history.reaches(HistorySize{Events: historyLimit.Events / 2, Bytes: historyLimit.Bytes / 2})
}

// historyFull reports whether the history has reached its bounds: the run must stop.
func (s *State) historyFull() bool { return s.history.reaches(historyLimit) }

// historyError is the error of a run that stopped because its history reached its bounds.
func (s *State) historyError() *events.ExecutionError {
	h, l := s.history, historyLimit
	return &events.ExecutionError{
		Code: CodeHistoryTooLarge,
		Message: fmt.Sprintf("history has %d events (limit %d) and %d bytes (limit %d): the execution stops",
			h.Events, l.Events, h.Bytes, l.Bytes),
		Details: map[string]any{"events": h.Events, "bytes": h.Bytes, "max_events": l.Events, "max_bytes": l.Bytes},
	}
}

// encodedSize is the size of an event as the runtime appends it. An event that cannot be
// encoded (over events.MaxEventSize) counts as the largest one: its append fails on the same
// error.
func encodedSize(ev events.Event) int64 {
	if n := ev.EncodedSize(); n > 0 {
		return int64(n)
	}
	b, err := events.Marshal(ev)
	if err != nil {
		return events.MaxEventSize
	}
	return int64(len(b))
}
