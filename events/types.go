package events

// Type is an event's CloudEvents type. Each is written out here and never derived from a Go type
// name, because stored events outlive renames.
type Type string

// The execution's inputs: facts that happen to an execution from outside the core (see doc.go).
const (
	TypeExecutionQueued      Type = "memmie.execution.queued"
	TypeExecutionStarted     Type = "memmie.execution.started"
	TypeStepReported         Type = "memmie.execution.step.reported"
	TypeCompensationReported Type = "memmie.execution.compensation.reported"
	TypeTimerFired           Type = "memmie.execution.timer.fired"
	TypeCancelRequested      Type = "memmie.execution.cancel_requested"
	TypeRetryRequested       Type = "memmie.execution.retry_requested"
	// TypeDeltasRejected: a completed execution's output could not be written on its blob.
	TypeDeltasRejected Type = "memmie.execution.deltas_rejected"
)

// The core's decisions: what the execution does about its inputs.
const (
	TypeStepScheduled              Type = "memmie.execution.step.scheduled"
	TypeStepSucceeded              Type = "memmie.execution.step.succeeded"
	TypeStepFailed                 Type = "memmie.execution.step.failed"
	TypeStepRetryScheduled         Type = "memmie.execution.step.retry_scheduled"
	TypeStepSkipped                Type = "memmie.execution.step.skipped"
	TypeCompensationScheduled      Type = "memmie.execution.compensation.scheduled"
	TypeCompensationSucceeded      Type = "memmie.execution.compensation.succeeded"
	TypeCompensationFailed         Type = "memmie.execution.compensation.failed"
	TypeCompensationRetryScheduled Type = "memmie.execution.compensation.retry_scheduled"
	TypeExecutionCompensating      Type = "memmie.execution.compensating"
	TypeExecutionCompleted         Type = "memmie.execution.completed"
	TypeExecutionFailed            Type = "memmie.execution.failed"
	TypeExecutionCancelled         Type = "memmie.execution.cancelled"
	TypeExecutionRetryScheduled    Type = "memmie.execution.retry_scheduled"
	TypeExecutionRequeued          Type = "memmie.execution.requeued"
)

// Blob, delta, definition and dead-letter events.
const (
	TypeBlobCreated           Type = "memmie.blob.created"
	TypeBlobUpdated           Type = "memmie.blob.updated"
	TypeBlobDeleted           Type = "memmie.blob.deleted"
	TypeDelta                 Type = "memmie.delta.appended"
	TypeDefinitionRegistered  Type = "memmie.definition.registered"
	TypeDefinitionDeactivated Type = "memmie.definition.deactivated"
	TypeDeadLetter            Type = "memmie.deadletter.recorded"
	TypeDeadLetterRedriven    Type = "memmie.deadletter.redriven"
)

// IsExecution reports whether t is an event of an execution's history.
func (t Type) IsExecution() bool {
	reg, ok := registry[t]
	return ok && reg.execution
}

// IsInput reports whether t is an execution input: appended because something happened to the
// execution (a start, an HTTP result, a timer, a request), not decided by the core.
func (t Type) IsInput() bool {
	switch t {
	case TypeExecutionQueued, TypeExecutionStarted, TypeStepReported, TypeCompensationReported,
		TypeTimerFired, TypeCancelRequested, TypeRetryRequested, TypeDeltasRejected:
		return true
	}
	return false
}

// Sources name the component that appended an event (the CloudEvents source attribute).
const (
	SourceCore        = "/memmie/core"        // decisions
	SourceAPI         = "/memmie/api"         // executions started, cancelled or retried by a user
	SourceTriggers    = "/memmie/triggers"    // executions queued by blob events
	SourceDispatcher  = "/memmie/dispatcher"  // execution.started
	SourceRunner      = "/memmie/runner"      // step and compensation reports
	SourceTimers      = "/memmie/timers"      // timer.fired
	SourceBlobs       = "/memmie/blobs"       // deltas, derived blobs' created events, deltas_rejected
	SourceDefinitions = "/memmie/definitions" // definition revisions
	SourceDeadLetter  = "/memmie/deadletter"  // dead-lettered messages
)

// ErrorKind classifies why an attempt failed. The runner reports the first six; the core
// produces the others when a step's own expressions fail.
type ErrorKind string

const (
	ErrorNetwork        ErrorKind = "network"         // connection refused, reset, DNS...
	ErrorTimeout        ErrorKind = "timeout"         // the attempt's timeout_ms ran out
	ErrorHTTP           ErrorKind = "http"            // a response with a status other than 2xx
	ErrorDecode         ErrorKind = "decode"          // a 2xx response whose body is not JSON
	ErrorUnknownService ErrorKind = "unknown_service" // the service is not configured
	ErrorTooLarge       ErrorKind = "too_large"       // the response body exceeds the runner's limit
	ErrorInput          ErrorKind = "input"           // input_map or endpoint could not be resolved
	ErrorCondition      ErrorKind = "condition"       // the condition could not be evaluated
	ErrorOutput         ErrorKind = "output"          // output_map could not be applied
)

// Error codes of a failed execution (ExecutionError.Code).
const (
	CodeStepFailed        = "step_failed"
	CodeInputInvalid      = "input_invalid"
	CodeOutputInvalid     = "output_invalid"
	CodeDeadlineExceeded  = "deadline_exceeded"
	CodeDefinitionInvalid = "definition_invalid"
)

// TimerKind says what a durable timer is for.
type TimerKind string

const (
	TimerStepRetry           TimerKind = "step_retry"           // a step's next attempt is due
	TimerStepTimeout         TimerKind = "step_timeout"         // a step attempt ran out of time
	TimerCompensationRetry   TimerKind = "compensation_retry"   // a compensation's next attempt is due
	TimerCompensationTimeout TimerKind = "compensation_timeout" // a compensation attempt ran out of time
	TimerExecutionDeadline   TimerKind = "execution_deadline"   // the run's workflow timeout ran out
	TimerExecutionRetry      TimerKind = "execution_retry"      // an automatic re-run is due
)

// Outcome is how a run that stops early ends once its compensations are done.
type Outcome string

const (
	OutcomeFailed    Outcome = "failed"
	OutcomeCancelled Outcome = "cancelled"
)
