package execution

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
)

// Decide returns the events that follow from ev. s must be the state after applying ev (Apply
// records what an input means: a report, a timer, a request); Decide reads what follows from
// that state and returns the decisions, in order. Applying them to s gives the state after
// them; the runtime appends ev and them together. Each decision carries its encoding
// (events.Event.Encoding), the bytes to append.
//
// Only inputs lead to decisions (see events.Type.IsInput); for a decision, and for the queued
// event (the dispatcher starts an execution), Decide returns nothing. Decide is pure: the same
// state, event and now give the same events, byte for byte. It reads no clock but now.
//
// Decide is idempotent on the state: once its decisions are applied, deciding again on the same
// or a stale input returns nothing. That is what makes a duplicate or a late input harmless.
func Decide(s State, ev events.Event, now time.Time) ([]events.Event, error) {
	switch ev.Type {
	case events.TypeExecutionQueued:
		return nil, nil // the dispatcher starts it: execution.started
	case events.TypeDeltasRejected:
		return nil, nil // recorded on a completed run, which stays completed: nothing follows
	case events.TypeExecutionStarted, // a run starts: validate, run the first steps
		events.TypeStepReported,         // an attempt ended: a result, a retry, the next step
		events.TypeCompensationReported, // a compensation attempt ended: the next one, or the end
		events.TypeTimerFired,           // a retry is due, an attempt or the run timed out
		events.TypeCancelRequested,      // stop, compensate, cancel
		events.TypeRetryRequested:       // re-run a failed execution
	default:
		return nil, nil // a decision: what follows it was decided with it
	}
	if s.ExecutionID == "" {
		return nil, fmt.Errorf("decide on %s %s: empty state", ev.Type, ev.ID)
	}
	d := &decider{s: s.Clone(), now: now.UTC()}
	d.progress()
	if d.err != nil {
		return nil, fmt.Errorf("decide on %s %s: %w", ev.Type, ev.ID, d.err)
	}
	return d.out, nil
}

// decider takes decisions on a scratch copy of the state, applying each as it goes, so that one
// input can lead to a chain (skipped, succeeded, scheduled, ...).
type decider struct {
	s   State
	now time.Time
	out []events.Event
	err error
}

// progress takes one move at a time until the execution waits for an input.
func (d *decider) progress() {
	limit := 8*len(d.s.Steps) + 16 // every move ends a step, an attempt or the run: a loop is a bug
	for moves := 0; d.err == nil; moves++ {
		if moves > limit {
			d.err = fmt.Errorf("no end after %d moves in status %s", moves, d.s.Status)
			return
		}
		before := len(d.out)
		switch d.s.Status {
		case StatusQueued:
			d.queued()
		case StatusRunning:
			d.running()
		case StatusCompensating:
			d.compensating()
		case StatusRetryScheduled:
			d.waitingForRetry()
		case StatusFailed:
			d.failed()
		}
		if len(d.out) == before {
			return
		}
	}
}

// emit decides one event and applies it to the scratch state.
func (d *decider) emit(data events.ExecutionData) {
	ev := events.NewExecution(data, events.SourceCore, d.now)
	// Encoded once, here: its length counts towards the history's bounds, and the runtime
	// appends these bytes. An event that cannot be encoded is left to fail its append.
	if b, err := events.Marshal(ev); err == nil {
		ev = ev.WithEncoding(b)
	}
	if err := d.s.Apply(ev); err != nil {
		d.err = err
		return
	}
	d.out = append(d.out, ev)
}

func (d *decider) queued() {
	if d.s.CancelRequested {
		d.emit(&events.ExecutionCancelled{ExecutionID: d.s.ExecutionID, Run: d.s.Run, Reason: d.s.CancelReason})
	}
}

func (d *decider) waitingForRetry() {
	s := &d.s
	switch {
	case s.CancelRequested:
		// The failed run has its end (retry_scheduled): the cancel ends the run that waited
		// to be queued.
		d.emit(&events.ExecutionCancelled{ExecutionID: s.ExecutionID, Run: s.Run + 1, Reason: s.CancelReason})
	case s.RetryDue:
		priority := s.Priority // carried, so that the dispatcher needs no lookup
		d.emit(&events.ExecutionRequeued{ExecutionID: s.ExecutionID, Run: s.Run + 1, RetryCount: s.RetryCount + 1, Priority: &priority})
	}
}

func (d *decider) failed() {
	s := &d.s
	if s.RetryRequested {
		priority := s.Priority
		d.emit(&events.ExecutionRequeued{ExecutionID: s.ExecutionID, Run: s.Run + 1, RetryCount: s.RetryCount, Manual: true,
			Priority: &priority})
	}
}

// running takes the next move of a running run: settle the step in progress, stop, start the
// next step, or complete.
func (d *decider) running() {
	s := &d.s
	if s.StartError != nil {
		d.emit(&events.ExecutionFailed{ExecutionID: s.ExecutionID, Run: s.Run, Error: *s.StartError})
		return
	}
	if i := s.activeStep(); i >= 0 {
		st := &s.Steps[i]
		switch {
		case st.Status == StepReported:
			d.stepReported(i)
		case st.Status == StepRetryScheduled && d.stopping():
			// A cancel or the deadline: no more attempts. The step ends failed with its last
			// error when the rollback starts (see Apply of execution.compensating); it gets no
			// second result for the attempt that already has one.
			d.stop()
		case st.Status == StepRetryScheduled && st.RetryDue:
			d.emit(&events.StepScheduled{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, st.Attempt+1),
				Request: *st.Request, Deadline: d.now.Add(d.stepTimeout(i))})
		}
		return // StepScheduled: wait for the report or the timeout
	}
	if d.stopping() {
		d.stop()
		return
	}
	if i := s.nextPending(); i >= 0 {
		d.startStep(i)
		return
	}
	d.finish()
}

// startStep evaluates a step's condition and input, then runs a transform at once or asks the
// runner for the first attempt of an api_call.
func (d *decider) startStep(i int) {
	s, step, cs := &d.s, &d.s.workflow.Steps[i], &d.s.workflow.Compiled.Steps[i]
	scope := s.scope()
	if cs.Condition != nil {
		ok, err := cs.Condition.Eval(scope)
		if err != nil {
			d.stepFailed(i, 0, events.StepError{Kind: events.ErrorCondition, Message: err.Error()}, false)
			return
		}
		if !ok {
			d.emit(&events.StepSkipped{ExecutionID: s.ExecutionID, Run: s.Run, StepID: step.ID,
				Reason: "condition is false: " + step.Condition})
			return
		}
	}
	var input any
	if cs.Input != nil {
		var err error
		if input, err = cs.Input.Eval(scope); err != nil {
			d.stepFailed(i, 0, events.StepError{Kind: events.ErrorInput, Message: "input_map: " + err.Error()}, false)
			return
		}
	}
	if step.Type == definitions.StepTransform {
		d.emit(&events.StepSucceeded{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, 1), Output: input})
		return
	}
	path, err := expand(cs.Endpoint, input)
	if err != nil {
		d.stepFailed(i, 0, events.StepError{Kind: events.ErrorInput, Message: "endpoint: " + err.Error()}, false)
		return
	}
	req := events.Request{
		Service:        step.Service,
		Method:         step.HTTPMethod(),
		Path:           path,
		Body:           input,
		TimeoutMS:      d.stepTimeout(i).Milliseconds(),
		IdempotencyKey: s.idempotencyKey(i, false),
	}
	d.emit(&events.StepScheduled{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, 1), Request: req,
		Deadline: d.now.Add(d.stepTimeout(i))})
}

// stepReported decides what an attempt's report means: success, a retry, or failure.
func (d *decider) stepReported(i int) {
	s, st, cs := &d.s, &d.s.Steps[i], &d.s.workflow.Compiled.Steps[i]
	r := st.Report
	if r.OK() {
		out := r.Body
		if cs.Output != nil {
			var err error
			if out, err = cs.Output.Eval(r.Body); err != nil {
				d.stepFailed(i, st.Attempt, events.StepError{Kind: events.ErrorOutput, Message: "output_map: " + err.Error(),
					StatusCode: r.StatusCode}, false)
				return
			}
		}
		d.emit(&events.StepSucceeded{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, st.Attempt), Output: out})
		return
	}
	e, retryable := classify(*r)
	policy := s.workflow.Steps[i].RetryPolicyOrDefault()
	if retryable && st.Attempt < policy.MaxAttempts && !d.stopping() {
		delay := retryDelay(policy, *r, s.Seed, "step", s.Run, st.ID, st.Attempt)
		d.emit(&events.StepRetryScheduled{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, st.Attempt), Error: e,
			NextAttempt: st.Attempt + 1, DelayMS: delay.Milliseconds(), DueAt: d.now.Add(delay)})
		return
	}
	d.stepFailed(i, st.Attempt, e, retryable)
}

func (d *decider) stepFailed(i, attempt int, e events.StepError, retryable bool) {
	d.emit(&events.StepFailed{ExecutionID: d.s.ExecutionID, AttemptRef: d.ref(i, attempt), Error: e, Retryable: retryable})
}

// stop starts the rollback of a run that cannot go on. A cancel wins over the deadline, which
// wins over a step's failure.
func (d *decider) stop() {
	s := &d.s
	c := &events.ExecutionCompensating{ExecutionID: s.ExecutionID, Run: s.Run, Outcome: events.OutcomeFailed}
	switch i := s.failedStep(); {
	case s.CancelRequested:
		c.Outcome = events.OutcomeCancelled
	case s.DeadlineExceeded:
		c.Error = &events.ExecutionError{Code: events.CodeDeadlineExceeded,
			Message: fmt.Sprintf("the workflow's timeout of %s ran out", s.workflowTimeout())}
	case s.historyFull():
		// Before a step's failure: a retryable one must not lead to a re-run.
		c.Error = s.historyError()
	default:
		st := &s.Steps[i]
		c.Error = &events.ExecutionError{Code: events.CodeStepFailed, StepID: st.ID,
			Message: fmt.Sprintf("step %s failed: %s", st.ID, st.Error.Message)}
		c.Retryable = st.Retryable
	}
	d.emit(c)
}

// finish completes a run whose steps are all done, or rolls it back when its output is invalid.
func (d *decider) finish() {
	s := &d.s
	out, err := s.output()
	if err == nil && s.outputSchema != nil {
		if verr := s.outputSchema.Compiled.Validate(out); verr != nil {
			d.emit(&events.ExecutionCompensating{ExecutionID: s.ExecutionID, Run: s.Run, Outcome: events.OutcomeFailed,
				Error: schemaError(events.CodeOutputInvalid, "output", verr)})
			return
		}
	}
	if err != nil {
		d.emit(&events.ExecutionCompensating{ExecutionID: s.ExecutionID, Run: s.Run, Outcome: events.OutcomeFailed,
			Error: &events.ExecutionError{Code: events.CodeOutputInvalid, Message: "output_map: " + err.Error()}})
		return
	}
	d.emit(&events.ExecutionCompleted{ExecutionID: s.ExecutionID, Run: s.Run, Output: out})
}

// compensating takes the next move of a rollback: settle the compensation in progress, start
// the next one (reverse step order), or end the run.
func (d *decider) compensating() {
	s := &d.s
	if i := s.activeCompensation(); i >= 0 {
		c := s.Steps[i].Compensation
		switch {
		case c.Status == StepReported:
			d.compensationReported(i)
		case c.Status == StepRetryScheduled && c.RetryDue:
			d.emit(&events.CompensationScheduled{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, c.Attempt+1),
				Request: *c.Request, Deadline: d.now.Add(d.stepTimeout(i))})
		}
		return
	}
	if i := s.nextToCompensate(); i >= 0 {
		d.startCompensation(i)
		return
	}
	d.end()
}

func (d *decider) startCompensation(i int) {
	s, comp, cs := &d.s, d.s.workflow.Steps[i].Compensation, &d.s.workflow.Compiled.Steps[i]
	var input any
	if cs.CompensationInput != nil {
		var err error
		if input, err = cs.CompensationInput.Eval(s.scope()); err != nil {
			d.emit(&events.CompensationFailed{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, 0),
				Error: events.StepError{Kind: events.ErrorInput, Message: "compensation input_map: " + err.Error()}})
			return
		}
	}
	path, err := expand(cs.CompensationEndpoint, input)
	if err != nil {
		d.emit(&events.CompensationFailed{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, 0),
			Error: events.StepError{Kind: events.ErrorInput, Message: "compensation endpoint: " + err.Error()}})
		return
	}
	req := events.Request{
		Service:        comp.Service,
		Method:         comp.HTTPMethod(),
		Path:           path,
		Body:           input,
		TimeoutMS:      d.stepTimeout(i).Milliseconds(),
		IdempotencyKey: s.idempotencyKey(i, true),
	}
	d.emit(&events.CompensationScheduled{ExecutionID: s.ExecutionID, AttemptRef: d.ref(i, 1), Request: req,
		Deadline: d.now.Add(d.stepTimeout(i))})
}

// compensationReported decides a compensation attempt's outcome under its step's retry policy.
func (d *decider) compensationReported(i int) {
	s, c := &d.s, d.s.Steps[i].Compensation
	r := c.Report
	ref := d.ref(i, c.Attempt)
	if r.OK() {
		d.emit(&events.CompensationSucceeded{ExecutionID: s.ExecutionID, AttemptRef: ref, Output: r.Body})
		return
	}
	e, retryable := classify(*r)
	policy := s.workflow.Steps[i].RetryPolicyOrDefault()
	if retryable && c.Attempt < policy.MaxAttempts {
		delay := retryDelay(policy, *r, s.Seed, "compensation", s.Run, ref.StepID, c.Attempt)
		d.emit(&events.CompensationRetryScheduled{ExecutionID: s.ExecutionID, AttemptRef: ref, Error: e,
			NextAttempt: c.Attempt + 1, DelayMS: delay.Milliseconds(), DueAt: d.now.Add(delay)})
		return
	}
	d.emit(&events.CompensationFailed{ExecutionID: s.ExecutionID, AttemptRef: ref, Error: e, Retryable: retryable})
}

// end ends a run whose rollback is done: cancelled, retried later, or failed.
func (d *decider) end() {
	s, stop := &d.s, d.s.Stop
	switch {
	case stop.Outcome == events.OutcomeCancelled:
		d.emit(&events.ExecutionCancelled{ExecutionID: s.ExecutionID, Run: s.Run, Reason: s.CancelReason,
			CompensationFailed: s.CompensationFailed})
	case stop.Retryable && !s.CompensationFailed && !s.CancelRequested && s.RetryCount < s.MaxRetries && s.historyFull():
		// The compensations took the history to its bounds: no re-run could start.
		e := s.historyError()
		e.Message += "; the run stopped on: " + stop.Error.Message
		d.emit(&events.ExecutionFailed{ExecutionID: s.ExecutionID, Run: s.Run, Error: *e})
	case stop.Retryable && !s.CompensationFailed && !s.CancelRequested && s.RetryCount < s.MaxRetries:
		delay := executionRetryDelay(s.Seed, s.RetryCount+1)
		d.emit(&events.ExecutionRetryScheduled{ExecutionID: s.ExecutionID, Run: s.Run, Error: *stop.Error,
			RetryCount: s.RetryCount + 1, DelayMS: delay.Milliseconds(), DueAt: d.now.Add(delay)})
	default:
		d.emit(&events.ExecutionFailed{ExecutionID: s.ExecutionID, Run: s.Run, Error: *stop.Error,
			CompensationFailed: s.CompensationFailed, Retryable: stop.Retryable})
	}
}

// stopping reports whether the run must stop scheduling: see State.stopping, or a history that
// reached its bounds.
func (d *decider) stopping() bool { return d.s.stopping() || d.s.historyFull() }

func (d *decider) ref(i, attempt int) events.AttemptRef {
	return events.AttemptRef{Run: d.s.Run, StepID: d.s.Steps[i].ID, Attempt: attempt}
}

func (d *decider) stepTimeout(i int) time.Duration {
	return time.Duration(d.s.workflow.Steps[i].Timeout()) * time.Second
}

// classify turns a failed attempt into a step error and says whether another attempt may help:
// network errors, timeouts, 5xx, 408 and 429 are transient; the rest fails at once.
func classify(r events.Response) (events.StepError, bool) {
	kind := r.ErrorKind
	if kind == "" {
		kind = events.ErrorHTTP // a non-2xx status that the runner did not classify
	}
	e := events.StepError{Kind: kind, Message: r.Error, StatusCode: r.StatusCode}
	if kind == events.ErrorHTTP && e.Message == "" {
		e.Message = "HTTP " + strconv.Itoa(r.StatusCode)
		if r.Body != nil {
			if b, err := json.Marshal(r.Body); err == nil {
				e.Message += ": " + truncate(string(b), 200)
			}
		}
	}
	switch kind {
	case events.ErrorNetwork, events.ErrorTimeout:
		return e, true
	case events.ErrorHTTP:
		c := r.StatusCode
		return e, c >= 500 || c == 408 || c == 429
	}
	return e, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
