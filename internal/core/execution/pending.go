package execution

import (
	"time"

	"github.com/memmie/memmie/events"
)

// Pending is what an execution waits for from the runtime: the work a restarted runtime must
// make sure is under way after a fold. Every item is idempotent to redo (requests carry
// idempotency keys, timers have deterministic event ids).
type Pending struct {
	// Dispatch says a run waits for the dispatcher to append execution.started.
	Dispatch bool
	// Requests are HTTP attempts in flight, in step order (at most one step and one
	// compensation). Each carries its deadline, which the runner that holds it enforces:
	// an attempt's timeout is no durable timer.
	Requests []Request
	// Timers are the durable timers that must be set: retry backoffs, the run's deadline
	// and its automatic re-run.
	Timers []Timer
}

// Request is an attempt the runner must make (or has made without a report yet).
type Request struct {
	ExecutionID string
	// Compensation says the attempt is of the step's compensation.
	Compensation bool
	events.AttemptRef
	Request  events.Request
	Deadline time.Time
}

// DeadlinePassed is the error of an attempt that had no report by its deadline: the runner
// reports it for an attempt it takes up too late, and a step or compensation timeout timer
// records it.
const DeadlinePassed = "no report before the attempt's deadline"

// Report builds the report of the attempt, to append as an input.
func (r Request) Report(resp events.Response, now time.Time) events.Event {
	if r.Compensation {
		return events.NewExecution(&events.CompensationReported{ExecutionID: r.ExecutionID, AttemptRef: r.AttemptRef,
			Response: resp}, events.SourceRunner, now)
	}
	return events.NewExecution(&events.StepReported{ExecutionID: r.ExecutionID, AttemptRef: r.AttemptRef,
		Response: resp}, events.SourceRunner, now)
}

// Timeout returns the attempt's timeout as a timer due at its deadline: a step.timeout or
// compensation.timeout timer.fired, with the id such a timer has always had. No timer is set
// for it (the runner enforces the deadline); the reconciler fires it for an attempt whose
// report was lost. ok is false for an attempt with no deadline.
func (r Request) Timeout() (t Timer, ok bool) {
	kind := events.TimerStepTimeout
	if r.Compensation {
		kind = events.TimerCompensationTimeout
	}
	return Timer{At: r.Deadline, Fire: Fire(r.ExecutionID, kind, r.AttemptRef, r.Deadline)}, !r.Deadline.IsZero()
}

// Timer is a durable timer: at At, append Fire (a timer.fired input).
type Timer struct {
	At   time.Time
	Fire events.Event
}

// Pending returns what the execution waits for, in a fixed order.
func (s *State) Pending() Pending {
	var p Pending
	switch s.Status {
	case StatusQueued:
		p.Dispatch = !s.CancelRequested
	case StatusRetryScheduled:
		if !s.RetryDue {
			p.Timers = append(p.Timers, s.timer(events.TimerExecutionRetry, s.RetryAt, events.AttemptRef{Run: s.Run}))
		}
	case StatusRunning, StatusCompensating:
		if s.Status == StatusRunning && !s.DeadlineExceeded && !s.Deadline.IsZero() {
			p.Timers = append(p.Timers, s.timer(events.TimerExecutionDeadline, s.Deadline, events.AttemptRef{Run: s.Run}))
		}
		for i := range s.Steps {
			st := &s.Steps[i]
			s.pendingAttempts(&p, &st.Attempts, st.ID, false)
			if st.Compensation != nil {
				s.pendingAttempts(&p, st.Compensation, st.ID, true)
			}
		}
	}
	return p
}

func (s *State) pendingAttempts(p *Pending, a *Attempts, stepID string, compensation bool) {
	ref := events.AttemptRef{Run: s.Run, StepID: stepID, Attempt: a.Attempt}
	retry := events.TimerStepRetry
	if compensation {
		retry = events.TimerCompensationRetry
	}
	switch a.Status {
	case StepScheduled:
		// Its deadline is the runner's to enforce: no timer.
		p.Requests = append(p.Requests, Request{ExecutionID: s.ExecutionID, Compensation: compensation, AttemptRef: ref,
			Request: *a.Request, Deadline: a.Deadline})
	case StepRetryScheduled:
		if !a.RetryDue {
			ref.Attempt++
			p.Timers = append(p.Timers, s.timer(retry, a.RetryAt, ref))
		}
	}
}

func (s *State) timer(kind events.TimerKind, at time.Time, ref events.AttemptRef) Timer {
	return Timer{
		At:   at,
		Fire: Fire(s.ExecutionID, kind, ref, at),
	}
}

// Fire builds the timer.fired input of a timer set for ref (the run, and for step timers the
// step and attempt) due at at. Its id is deterministic: a timer that fires twice is one event.
func Fire(executionID string, kind events.TimerKind, ref events.AttemptRef, at time.Time) events.Event {
	return events.NewExecution(&events.TimerFired{ExecutionID: executionID, Kind: kind, Run: ref.Run,
		StepID: ref.StepID, Attempt: ref.Attempt, DueAt: at.UTC()}, events.SourceTimers, at)
}

// Start builds the execution.started input for the run that waits for the dispatcher, with its
// deadline (now plus the workflow's timeout). ok is false when no run waits.
func Start(s *State, now time.Time) (ev events.Event, ok bool) {
	if s.Status != StatusQueued || s.CancelRequested {
		return events.Event{}, false
	}
	return events.NewExecution(&events.ExecutionStarted{ExecutionID: s.ExecutionID, Run: s.Run,
		Deadline: now.UTC().Add(s.workflowTimeout())}, events.SourceDispatcher, now), true
}
