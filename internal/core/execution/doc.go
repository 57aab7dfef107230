// Package execution is memmie's functional core: an execution's state is a fold over its
// events, and the next events are Decide(state, event, now). It performs no I/O, reads no clock
// but the now it is given, draws no random number (jitter comes from the seed in the queued
// event), starts no goroutine and never depends on map order: the same state, event and now
// give the same events, byte for byte. It must never import NATS, HTTP or Postgres code.
//
// # Using it
//
// The runtime keeps each execution's state and, for every input that arrives:
//
//	before := state.Clone()              // to roll back to when the append conflicts
//	if err := state.Apply(input); err != nil { ... }   // an inconsistent history: dead-letter
//	decisions, err := execution.Decide(state, input, now)
//	// append input and decisions, the first expecting the last sequence of
//	// memmie.executions.<id>.>; on a conflict, state = before, reload, decide again
//	for _, ev := range decisions { state.Apply(ev) }
//	// then do what the decisions ask (below), or reconcile with state.Pending()
//
// A cold load is Fold(history); Pending then lists what must be under way: HTTP attempts in
// flight (with the report to append, and the deadline the runner enforces), durable timers
// (with the timer.fired event to append when they run out), and whether a run waits for the
// dispatcher. Start builds the dispatcher's execution.started; Fire builds a timer's event;
// Request.Timeout builds the timeout of an attempt whose report was lost.
//
// # Inputs and decisions
//
// Decide is given the state after Apply(input). Apply records what an input means (a report,
// a timeout, a timer, a request) or, when it no longer applies, records it as stale and changes
// nothing else. Decide then reads what follows from the state, one move at a time, applying
// each decision to a scratch copy, until the execution waits for an input again; so one input
// can lead to a chain (step.succeeded, step.skipped, step.succeeded, execution.completed).
// Decisions lead to nothing. Deciding again on a state that already holds the decisions
// decides nothing, which makes a redelivered or stale input harmless.
//
// What the runtime does about each decision:
//
//	step.scheduled, compensation.scheduled  send Request; the runner ends it by Deadline
//	step.retry_scheduled                    set a step_retry timer at DueAt
//	compensation.retry_scheduled            set a compensation_retry timer at DueAt
//	execution.started (from the dispatcher) set the execution_deadline timer at Deadline
//	execution.retry_scheduled               set an execution_retry timer at DueAt
//	execution.requeued                      the dispatcher starts run N+1 like a queued one
//	execution.completed|failed|cancelled    the run has ended; a failed one may be retried
//
// # Semantics
//
// Steps run in order, one at a time. A step whose condition is false is skipped. A transform
// runs inside Decide: its output is its resolved input_map. An api_call's output is its
// output_map over the response body, or the body. Maps and conditions read $.input,
// $.steps.<id>.output and .status, $.execution.id, $.provider_id, $.workflow (id, name,
// provider_id, revision) and $.vars (each step's variables, taken from its output). The
// execution's output is the workflow's output_map, or the shallow merge of the object outputs
// of the steps that succeeded, later wins. The input is validated against the pinned input
// schema when a run starts (input_invalid: no step runs), the output against the output schema
// before completion (output_invalid: compensate, then fail).
//
// Attempts: retry.max_attempts counts every call. Network errors, timeouts, 5xx, 408 and 429
// are retried after backoff_ms × multiplier^(attempt-1), jittered by ±jitter, capped by
// max_backoff_ms; for 429 and 503 a longer Retry-After wins, up to MaxRetryAfter. Other 4xx
// fail the step at once. A timeout report of the attempt in flight (the runner's, at its
// deadline), or a step_timeout timer of it, is a timeout failure; a report of that attempt
// arriving later is stale.
//
// Stopping: a step that fails with on_failure: fail (the default), a cancel, or the
// execution_deadline timer stops the run: nothing more is scheduled; an attempt in flight is
// waited for (its success is compensated too); a step waiting for a retry ends failed with its
// last error. Then execution.compensating (the outcome and error) and the compensations of
// the steps that succeeded, in reverse order, one at a time, each retried under its step's
// retry policy; one that still fails sets compensation_failed and the others still run. Then
// cancelled, failed, or — for a transient failure (the failing step's last error was
// retryable; never a deadline, an invalid input or output, a failed compensation or a cancel)
// with max_retries left — execution.retry_scheduled, whose timer requeues the next run. With
// on_failure: continue the failure is recorded and the next step runs.
//
// Bounds: a run whose history reaches MaxHistoryEvents events or MaxHistoryBytes bytes (each
// event as events.Marshal encodes it; stale inputs are not recorded and do not count) stops
// like a failed step, with history_too_large, and fails once compensated; it is not re-run,
// and a manual retry of it is stale. Its compensations and its end are written past the bound.
//
// Runs: a manual retry_requested of a failed execution, or an automatic re-run, requeues run
// N+1. It keeps the results of the steps that succeeded and were not compensated, of skipped
// steps and of on_failure: continue failures, and runs the rest again from the failed step. A
// compensated step runs again under a new idempotency key (<execution_id>/<step_id>/2), since
// a service would otherwise replay its undone answer; otherwise the keys are
// <execution_id>/<step_id> for every attempt of a step and
// <execution_id>/<step_id>/compensate for its compensation. Attempts count from 1 in every run.
//
// Ends: each run ends once, with completed, failed, cancelled or retry_scheduled (their event
// ids share one slot per run). A cancel of a queued run, or during a retry wait, cancels at
// once; a cancel or retry that does not apply is stale. Events after the end decide nothing,
// but a retry_requested of a failed execution.
//
// Rejected deltas: deltas_rejected (from the blobs handler: the completed run's output cannot
// apply to its blob, and nothing of it was written) sets State.DeltasRejected and decides
// nothing. The status stays completed, as a Temporal workflow stays completed when what reads
// its result fails: the workflow did succeed, and a completed execution is never re-run. One
// rejection per run is recorded; another, or one for an execution that is not completed, is
// stale.
package execution
