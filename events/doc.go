// Package events is memmie's vocabulary: the event types, their payloads, the CloudEvents
// envelope they travel in, the NATS subjects they are stored on and their deterministic ids.
// It imports nothing of memmie and no NATS code (the stream configurations are in the streams
// subpackage), and it never performs I/O.
//
// # Envelope
//
// Every event memmie writes is a CloudEvents 1.0 JSON envelope whose dataschemaversion grows
// when the payload's shape changes:
//
//	ev := events.NewExecution(&events.CancelRequested{ExecutionID: id, Reason: "user"}, events.SourceAPI, now)
//	b, err := events.Marshal(ev)        // publish b on ev.Subject with header Nats-Msg-Id: ev.ID
//	ev, err = events.Decode(b)          // ev.Data is a *events.CancelRequested
//
// Decode rejects unknown types, payloads with unknown or malformed fields, versions newer than
// the build, and input over MaxEventSize. Data of an older version is upcast step by step
// (version N to N+1) before it is decoded; reports are at version 2 (see upcastReportV1).
// Unknown envelope attributes (CloudEvents extensions) are ignored.
//
// # Ids
//
// An execution event's id is a UUIDv5 of the execution id and a key naming its slot in the
// history (run/1/step/validate/attempt/2/result). Every result of one attempt shares a slot, as
// does every end of one run, so a re-decided event gets the id it had and JetStream's duplicate
// window (Nats-Msg-Id) drops it; past the window the execution's state recognises it.
//
// # Subjects
//
//	memmie.blobs.<blob_id>.created|updated|deleted   clients' blob events (DecodeBlobEvent), and
//	                                                 memmie's created events of derived blobs
//	memmie.executions.<execution_id>.<tail>          an execution's history; tail is the type
//	                                                 without "memmie.execution." (step.scheduled)
//	memmie.deltas.<blob_id>                          a blob's deltas
//	memmie.definitions.<kind>s.<id>                  definition revisions
//	memmie.deadletter.<source>                       messages that could not be processed
//	memmie.deadletter.<source>.redriven              dead letters sent back to their subject
//
// The execution id is always token 2 (ExecutionIDToken), so the runtime can partition on it.
//
// # The flow of an execution
//
// Inputs (Type.IsInput) are appended because something happened to the execution; decisions
// are what the core (internal/core/execution) decides about them. Who appends what:
//
//	API, triggers  execution.queued            pins the workflow, schemas, input, seed
//	dispatcher     execution.started           admits run N (a deadline for it)
//	core           step.scheduled              -> runner makes the HTTP call by its deadline
//	runner         step.reported               status, body, error kind, Retry-After
//	core           step.succeeded | step.failed | step.retry_scheduled (-> timer step_retry)
//	core           step.skipped                a condition was false
//	core           execution.compensating      the run stops early (failure, cancel, deadline)
//	core           compensation.scheduled      -> runner, likewise
//	runner         compensation.reported
//	core           compensation.succeeded | compensation.failed | compensation.retry_scheduled
//	timers         timer.fired                 step_retry, compensation_retry,
//	                                           execution_deadline, execution_retry; each names
//	                                           its run, step, attempt (step_timeout and
//	                                           compensation_timeout: the reconciler's, for a
//	                                           lost report, or an older version's timers)
//	API            cancel_requested, retry_requested
//	core           execution.completed | execution.failed | execution.cancelled |
//	               execution.retry_scheduled (-> timer execution_retry)
//	core           execution.requeued          run N+1 waits for the dispatcher again
//	blobs          deltas_rejected             a completed run's output cannot apply to its
//	                                           blob: nothing written, the run stays completed
//
// The core decides on every input and on nothing else; the runtime appends each input together
// with its decisions, the first expecting the last sequence of the execution's subjects and
// each next one the one before it (docs/architecture.md: inputs arrive as commands on
// InboxSubject and only the orchestrator writes the history). A timer is set when the decision
// that asks for it is appended (step.retry_scheduled -> step_retry at due_at, started ->
// execution_deadline, ...); when it runs out, its timer.fired command arrives on InboxSubject
// and is an input like any other. An attempt's deadline is no timer: the runner that holds
// the attempt enforces it, and reports a timeout.
// Timers that wait long are JetStream message schedules on the inbox stream
// (streams.TimerScheduleSubject), never on the history's subjects.
package events
