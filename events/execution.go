package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// ExecutionData is the payload of an event of an execution's history. Its event id and subject
// follow from it (see NewExecution).
type ExecutionData interface {
	Data
	// execution returns the execution id and the key that names the event's slot in the history.
	execution() (id, key string)
}

// AttemptRef names one attempt of one step, or of its compensation, in one run of an execution.
// Attempts count from 1 in every run.
type AttemptRef struct {
	Run     int    `json:"run"`
	StepID  string `json:"step_id"`
	Attempt int    `json:"attempt"`
}

func (r AttemptRef) key(what, slot string) string {
	return "run/" + strconv.Itoa(r.Run) + "/" + what + "/" + r.StepID + "/attempt/" + strconv.Itoa(r.Attempt) + "/" + slot
}

func runKey(run int, slot string) string { return "run/" + strconv.Itoa(run) + "/" + slot }

// Request is a fully resolved HTTP call: the runner sends it as it is.
type Request struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	// Path is the expanded endpoint, relative to the service's base URL.
	Path string `json:"path"`
	// Body is the resolved input_map (null when the step has none).
	Body           any    `json:"body"`
	TimeoutMS      int64  `json:"timeout_ms"`
	IdempotencyKey string `json:"idempotency_key"`
}

// Response is what one HTTP attempt produced, as the runner saw it.
type Response struct {
	// StatusCode is 0 when no response arrived.
	StatusCode int `json:"status_code,omitempty"`
	// Body is the decoded JSON body, or null.
	Body any `json:"body"`
	// ErrorKind is empty when the attempt succeeded: a 2xx response with a JSON (or empty) body.
	ErrorKind ErrorKind `json:"error_kind,omitempty"`
	Error     string    `json:"error,omitempty"`
	// RetryAfterMS is the response's Retry-After header in milliseconds, 0 when absent.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	DurationMS   int64 `json:"duration_ms"`
}

// OK reports whether the attempt succeeded.
func (r Response) OK() bool {
	return r.ErrorKind == "" && r.StatusCode >= 200 && r.StatusCode < 300
}

// StepError says why a step or compensation attempt failed.
type StepError struct {
	Kind       ErrorKind `json:"kind"`
	Message    string    `json:"message"`
	StatusCode int       `json:"status_code,omitempty"`
}

// ExecutionError says why an execution failed.
type ExecutionError struct {
	Code    string `json:"code"` // one of the Code constants
	Message string `json:"message"`
	StepID  string `json:"step_id,omitempty"`
	Details any    `json:"details,omitempty"`
}

// ExecutionQueued starts an execution's history. It pins everything the execution needs, so
// that later registrations change nothing for it. Appended by whoever starts the execution
// (API, triggers); the dispatcher picks it up.
type ExecutionQueued struct {
	ExecutionID      string `json:"execution_id"`
	WorkflowID       string `json:"workflow_id"`
	WorkflowRevision int    `json:"workflow_revision"`
	// Workflow is the pinned workflow definition, as registered (canonical JSON).
	Workflow json.RawMessage `json:"workflow"`
	// InputSchema and OutputSchema are the pinned schema definitions, or null.
	InputSchema  json.RawMessage `json:"input_schema"`
	OutputSchema json.RawMessage `json:"output_schema"`
	Input        any             `json:"input"`
	// Priority is 0 to 100; higher runs first.
	Priority int `json:"priority"`
	// MaxRetries is how many automatic re-runs a retryable failure gets. Defaults to 0.
	MaxRetries     int    `json:"max_retries"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	ProviderID     string `json:"provider_id,omitempty"`
	BlobID         string `json:"blob_id,omitempty"`
	SourceEventID  string `json:"source_event_id,omitempty"`
	// BaseVersion is the blob version a triggered execution read (its input's blob).
	BaseVersion int64 `json:"base_version,omitempty"`
	// Trigger names the provider's trigger that matched, as workflows[0].triggers[1].
	Trigger string `json:"trigger,omitempty"`
	// Seed makes the execution's jitter deterministic. Chosen by whoever queues it.
	Seed int64 `json:"seed"`
}

// ExecutionStarted is appended by the dispatcher when it admits a queued run.
type ExecutionStarted struct {
	ExecutionID string `json:"execution_id"`
	Run         int    `json:"run"`
	// Deadline is when the run's workflow timeout runs out. When zero, the core takes the
	// event's time plus the workflow's timeout.
	Deadline time.Time `json:"deadline,omitzero"`
}

// StepScheduled asks the runner for one HTTP attempt.
type StepScheduled struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Request Request `json:"request"`
	// Deadline is when the attempt times out (a step_timeout timer).
	Deadline time.Time `json:"deadline"`
}

// StepReported is the runner's account of one attempt. It is an input: the core decides what
// it means.
type StepReported struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Response
}

// StepSucceeded records a step's output (after its output_map).
type StepSucceeded struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Output any `json:"output"`
}

// StepFailed records a step's final failure.
type StepFailed struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Error StepError `json:"error"`
	// Retryable says whether the last error was of a retryable kind (the attempts ran out, or
	// the run was stopping).
	Retryable bool `json:"retryable"`
}

// StepRetryScheduled records a failed attempt that will be tried again.
type StepRetryScheduled struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Error       StepError `json:"error"`
	NextAttempt int       `json:"next_attempt"`
	DelayMS     int64     `json:"delay_ms"`
	DueAt       time.Time `json:"due_at"`
}

// StepSkipped records a step whose condition was false.
type StepSkipped struct {
	ExecutionID string `json:"execution_id"`
	Run         int    `json:"run"`
	StepID      string `json:"step_id"`
	Reason      string `json:"reason"`
}

// CompensationScheduled asks the runner for one attempt of a step's compensation.
type CompensationScheduled struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Request  Request   `json:"request"`
	Deadline time.Time `json:"deadline"`
}

// CompensationReported is the runner's account of one compensation attempt (an input).
type CompensationReported struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Response
}

// CompensationSucceeded records an undone step.
type CompensationSucceeded struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Output any `json:"output"`
}

// CompensationFailed records a compensation that ran out of attempts.
type CompensationFailed struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Error     StepError `json:"error"`
	Retryable bool      `json:"retryable"`
}

// CompensationRetryScheduled records a failed compensation attempt that will be tried again.
type CompensationRetryScheduled struct {
	ExecutionID string `json:"execution_id"`
	AttemptRef
	Error       StepError `json:"error"`
	NextAttempt int       `json:"next_attempt"`
	DelayMS     int64     `json:"delay_ms"`
	DueAt       time.Time `json:"due_at"`
}

// TimerFired is appended when a durable timer runs out. It names the (run, step, attempt) it
// was set for, so that the core ignores it when that is no longer current. For step_retry and
// compensation_retry the attempt is the one that is due; for the timeouts it is the one that ran
// out; execution timers carry no step.
type TimerFired struct {
	ExecutionID string    `json:"execution_id"`
	Kind        TimerKind `json:"kind"`
	Run         int       `json:"run"`
	StepID      string    `json:"step_id,omitempty"`
	Attempt     int       `json:"attempt,omitempty"`
	DueAt       time.Time `json:"due_at"`
}

// ExecutionCompensating records that a run stops early (a failure, a cancel, the deadline) and
// rolls back what succeeded. When the compensations are done the run ends as Outcome says.
type ExecutionCompensating struct {
	ExecutionID string  `json:"execution_id"`
	Run         int     `json:"run"`
	Outcome     Outcome `json:"outcome"`
	// Error is what a failed run fails with; null for a cancel.
	Error     *ExecutionError `json:"error"`
	Retryable bool            `json:"retryable"`
}

// ExecutionCompleted ends a run that succeeded.
type ExecutionCompleted struct {
	ExecutionID string `json:"execution_id"`
	Run         int    `json:"run"`
	Output      any    `json:"output"`
}

// ExecutionFailed ends a run that failed, after its compensations.
type ExecutionFailed struct {
	ExecutionID        string         `json:"execution_id"`
	Run                int            `json:"run"`
	Error              ExecutionError `json:"error"`
	CompensationFailed bool           `json:"compensation_failed"`
	// Retryable says whether the failure was transient (a manual retry is likely to help).
	Retryable bool `json:"retryable"`
}

// CancelRequested asks to cancel an execution (an input, from the API).
type CancelRequested struct {
	ExecutionID string `json:"execution_id"`
	// Run is the run the requester saw, 0 when unknown. It only names the request.
	Run    int    `json:"run"`
	Reason string `json:"reason,omitempty"`
}

// ExecutionCancelled ends a cancelled run, after its compensations.
type ExecutionCancelled struct {
	ExecutionID        string `json:"execution_id"`
	Run                int    `json:"run"`
	Reason             string `json:"reason,omitempty"`
	CompensationFailed bool   `json:"compensation_failed"`
}

// RetryRequested asks to re-run a failed execution from its failed step (an input, from the
// API).
type RetryRequested struct {
	ExecutionID string `json:"execution_id"`
	// Run is the failed run to retry; 0 means the current one.
	Run    int    `json:"run"`
	Reason string `json:"reason,omitempty"`
}

// ExecutionRetryScheduled ends a run whose retryable failure gets an automatic re-run.
type ExecutionRetryScheduled struct {
	ExecutionID string         `json:"execution_id"`
	Run         int            `json:"run"`
	Error       ExecutionError `json:"error"`
	// RetryCount is the number of automatic re-runs including this one.
	RetryCount int       `json:"retry_count"`
	DelayMS    int64     `json:"delay_ms"`
	DueAt      time.Time `json:"due_at"`
}

// ExecutionRequeued puts a new run in the queue; the dispatcher starts it like a queued one.
type ExecutionRequeued struct {
	ExecutionID string `json:"execution_id"`
	// Run is the new run's number.
	Run        int  `json:"run"`
	RetryCount int  `json:"retry_count"`
	Manual     bool `json:"manual"`
	// Priority is the execution's, from its queued event, so that the dispatcher needs no
	// lookup to queue the run. Nil in requeued events stored before it existed.
	Priority *int `json:"priority,omitempty"`
}

// DeltasRejected records that a completed execution's output cannot apply to its blob (an
// input, from the blobs handler): nothing of it was written on the blob. The run stays
// completed, since its workflow succeeded; the state says what was rejected and why.
type DeltasRejected struct {
	ExecutionID string `json:"execution_id"`
	// Run is the completed run whose output was rejected.
	Run    int    `json:"run"`
	BlobID string `json:"blob_id"`
	// BlobVersion is the blob's version the output was judged against.
	BlobVersion int64 `json:"blob_version"`
	// Item names what could not apply: delta_operations[2], created_blobs[0], output, blob.
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

func (*ExecutionQueued) EventType() Type            { return TypeExecutionQueued }
func (*ExecutionStarted) EventType() Type           { return TypeExecutionStarted }
func (*StepScheduled) EventType() Type              { return TypeStepScheduled }
func (*StepReported) EventType() Type               { return TypeStepReported }
func (*StepSucceeded) EventType() Type              { return TypeStepSucceeded }
func (*StepFailed) EventType() Type                 { return TypeStepFailed }
func (*StepRetryScheduled) EventType() Type         { return TypeStepRetryScheduled }
func (*StepSkipped) EventType() Type                { return TypeStepSkipped }
func (*CompensationScheduled) EventType() Type      { return TypeCompensationScheduled }
func (*CompensationReported) EventType() Type       { return TypeCompensationReported }
func (*CompensationSucceeded) EventType() Type      { return TypeCompensationSucceeded }
func (*CompensationFailed) EventType() Type         { return TypeCompensationFailed }
func (*CompensationRetryScheduled) EventType() Type { return TypeCompensationRetryScheduled }
func (*TimerFired) EventType() Type                 { return TypeTimerFired }
func (*ExecutionCompensating) EventType() Type      { return TypeExecutionCompensating }
func (*ExecutionCompleted) EventType() Type         { return TypeExecutionCompleted }
func (*ExecutionFailed) EventType() Type            { return TypeExecutionFailed }
func (*CancelRequested) EventType() Type            { return TypeCancelRequested }
func (*ExecutionCancelled) EventType() Type         { return TypeExecutionCancelled }
func (*RetryRequested) EventType() Type             { return TypeRetryRequested }
func (*ExecutionRetryScheduled) EventType() Type    { return TypeExecutionRetryScheduled }
func (*ExecutionRequeued) EventType() Type          { return TypeExecutionRequeued }
func (*DeltasRejected) EventType() Type             { return TypeDeltasRejected }

// The keys name each event's slot in the history. Every result of one attempt shares one slot
// ("result"), and every end of one run shares one ("end"): a second, different decision for a
// slot gets the same id and JetStream drops it.

func (d *ExecutionQueued) execution() (string, string) { return d.ExecutionID, "queued" }
func (d *ExecutionStarted) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "started")
}
func (d *StepScheduled) execution() (string, string) {
	return d.ExecutionID, d.key("step", "scheduled")
}
func (d *StepReported) execution() (string, string) {
	return d.ExecutionID, d.key("step", "reported")
}
func (d *StepSucceeded) execution() (string, string) { return d.ExecutionID, d.key("step", "result") }
func (d *StepFailed) execution() (string, string)    { return d.ExecutionID, d.key("step", "result") }
func (d *StepRetryScheduled) execution() (string, string) {
	return d.ExecutionID, d.key("step", "result")
}
func (d *StepSkipped) execution() (string, string) {
	return d.ExecutionID, AttemptRef{Run: d.Run, StepID: d.StepID}.key("step", "result")
}
func (d *CompensationScheduled) execution() (string, string) {
	return d.ExecutionID, d.key("compensation", "scheduled")
}
func (d *CompensationReported) execution() (string, string) {
	return d.ExecutionID, d.key("compensation", "reported")
}
func (d *CompensationSucceeded) execution() (string, string) {
	return d.ExecutionID, d.key("compensation", "result")
}
func (d *CompensationFailed) execution() (string, string) {
	return d.ExecutionID, d.key("compensation", "result")
}
func (d *CompensationRetryScheduled) execution() (string, string) {
	return d.ExecutionID, d.key("compensation", "result")
}
func (d *TimerFired) execution() (string, string) {
	key := runKey(d.Run, "timer/"+string(d.Kind))
	if d.StepID != "" {
		key += "/step/" + d.StepID + "/attempt/" + strconv.Itoa(d.Attempt)
	}
	return d.ExecutionID, key
}
func (d *ExecutionCompensating) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "compensating")
}
func (d *ExecutionCompleted) execution() (string, string) { return d.ExecutionID, runKey(d.Run, "end") }
func (d *ExecutionFailed) execution() (string, string)    { return d.ExecutionID, runKey(d.Run, "end") }
func (d *ExecutionCancelled) execution() (string, string) { return d.ExecutionID, runKey(d.Run, "end") }
func (d *ExecutionRetryScheduled) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "end")
}
func (d *CancelRequested) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "cancel_requested")
}
func (d *RetryRequested) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "retry_requested")
}
func (d *ExecutionRequeued) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "requeued")
}

// One rejection per run: a rejection sent again, or judged again on a newer blob, shares the
// slot of the first.
func (d *DeltasRejected) execution() (string, string) {
	return d.ExecutionID, runKey(d.Run, "deltas_rejected")
}

// NewExecution builds an event of an execution's history. Its id is deterministic (see ID) and
// its subject is ExecutionSubject's.
func NewExecution(data ExecutionData, source string, at time.Time) Event {
	id, key := data.execution()
	return Event{
		ID:      ID(id, key),
		Source:  source,
		Type:    data.EventType(),
		Subject: executionSubject(id, data.EventType()),
		Time:    at.UTC(),
		Data:    data,
	}
}

// ExecutionID returns the execution an event belongs to, or "" for other events.
func (e Event) ExecutionID() string {
	if d, ok := e.Data.(ExecutionData); ok {
		id, _ := d.execution()
		return id
	}
	return ""
}

// validate checks what every execution event needs; Decode calls it.
func validateExecution(d ExecutionData) error {
	id, _ := d.execution()
	if err := ValidToken(id); err != nil {
		return fmt.Errorf("execution_id: %w", err)
	}
	return nil
}
