package definitions

import "github.com/memmie/memmie/definitions/eval"

// Kind names the three kinds of definition.
type Kind string

const (
	KindSchema   Kind = "schema"
	KindWorkflow Kind = "workflow"
	KindProvider Kind = "provider"
)

// StepType says how a step runs.
type StepType string

const (
	// StepAPICall calls a registered service over HTTP.
	StepAPICall StepType = "api_call"
	// StepTransform runs in-process: its output is its resolved input_map.
	StepTransform StepType = "transform"
)

// OnFailure says what a step's final failure does to the execution.
type OnFailure string

const (
	// OnFailureFail compensates the steps that succeeded, in reverse order, then fails the
	// execution. It is the default.
	OnFailureFail OnFailure = "fail"
	// OnFailureContinue records the failure and runs the next step.
	OnFailureContinue OnFailure = "continue"
)

// Defaults and bounds of workflow and step settings. The README's definition reference quotes
// them; change both together.
const (
	DefaultStepTimeoutSeconds     = 30
	MaxStepTimeoutSeconds         = 3600
	DefaultWorkflowTimeoutSeconds = 3600      // one hour for the whole execution
	MaxWorkflowTimeoutSeconds     = 7 * 86400 // a week
	DefaultBackoffMS              = 1000
	DefaultMaxBackoffMS           = 60_000
	DefaultMultiplier             = 2.0
	DefaultJitter                 = 0.2 // ±20% of the delay
	MaxAttempts                   = 100
	MaxBackoffMS                  = 3_600_000 // one hour
	MaxMultiplier                 = 10.0

	// MaxIDLength bounds the ids of schemas, workflows and providers.
	MaxIDLength = 128
	// MaxStepIDLength bounds step ids, variable names and service names.
	MaxStepIDLength = 64
	// MinPriority and MaxPriority bound a provider binding's priority. Higher runs first.
	MinPriority = 0
	MaxPriority = 100
	// DefaultMethod is the HTTP method of an api_call step or a compensation that names none.
	DefaultMethod = "POST"
)

// Schema types: what a schema describes.
const (
	SchemaInput  = "input"
	SchemaOutput = "output"
)

// Workflow is a declarative list of steps, run in order.
type Workflow struct {
	ID             string `json:"id"`
	ProviderID     string `json:"provider_id,omitempty"`
	Name           string `json:"name,omitempty"`
	Description    string `json:"description,omitempty"`
	InputSchemaID  string `json:"input_schema_id,omitempty"`
	OutputSchemaID string `json:"output_schema_id,omitempty"`
	// Active false means the workflow is neither triggered nor startable. Defaults to true.
	Active *bool `json:"active,omitempty"`
	// TimeoutSeconds bounds the whole execution. Defaults to DefaultWorkflowTimeoutSeconds.
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
	Steps          []Step `json:"steps"`
	// OutputMap builds the execution's output from the steps' outputs. Without it the output is
	// the shallow merge of the outputs of the steps that succeeded, in step order, later wins.
	OutputMap map[string]any `json:"output_map,omitempty"`

	// Compiled forms, filled by Compile (and by the loader). Not serialised.
	Compiled *CompiledWorkflow `json:"-"`
}

// IsActive reports whether the workflow can be triggered and started.
func (w *Workflow) IsActive() bool { return w.Active == nil || *w.Active }

// Step is one unit of work of a workflow.
type Step struct {
	ID        string         `json:"id"`
	Name      string         `json:"name,omitempty"`
	Type      StepType       `json:"type"`
	Service   string         `json:"service,omitempty"`
	Endpoint  string         `json:"endpoint,omitempty"`
	Method    string         `json:"method,omitempty"`
	InputMap  map[string]any `json:"input_map,omitempty"`
	OutputMap map[string]any `json:"output_map,omitempty"`
	Condition string         `json:"condition,omitempty"`
	// Variables names keys of the step's output that are exported into $.vars for later steps:
	// a step with variables [score] whose output is {"score": 0.9} sets $.vars.score to 0.9. A
	// key missing from the output exports null; a later step exporting the same name replaces
	// it. Names are identifiers; when the output's keys are known (an output_map, or a
	// transform's input_map) each name must be one of them. The workflow output_map, later
	// input_maps and conditions read them; nothing else does.
	Variables      []string      `json:"variables,omitempty"`
	TimeoutSeconds int           `json:"timeout_seconds,omitempty"`
	Compensation   *Compensation `json:"compensation,omitempty"`
	Retry          *RetryPolicy  `json:"retry,omitempty"`
	OnFailure      OnFailure     `json:"on_failure,omitempty"`
}

// Timeout returns the step's per-attempt timeout in seconds, with the default applied.
func (s *Step) Timeout() int {
	if s.TimeoutSeconds > 0 {
		return s.TimeoutSeconds
	}
	return DefaultStepTimeoutSeconds
}

// HTTPMethod returns the step's method with the default applied.
func (s *Step) HTTPMethod() string {
	if s.Method == "" {
		return DefaultMethod
	}
	return s.Method
}

// FailureAction returns on_failure with the default applied.
func (s *Step) FailureAction() OnFailure {
	if s.OnFailure == "" {
		return OnFailureFail
	}
	return s.OnFailure
}

// RetryPolicyOrDefault returns the step's retry policy with defaults applied. A step with no
// retry makes one attempt.
func (s *Step) RetryPolicyOrDefault() RetryPolicy {
	if s.Retry == nil {
		return RetryPolicy{MaxAttempts: 1}.WithDefaults()
	}
	return s.Retry.WithDefaults()
}

// Compensation undoes a step that succeeded, when a later failure or a cancel rolls the
// execution back.
type Compensation struct {
	Service  string         `json:"service"`
	Endpoint string         `json:"endpoint"`
	Method   string         `json:"method,omitempty"`
	InputMap map[string]any `json:"input_map,omitempty"`
}

// HTTPMethod returns the compensation's method with the default applied.
func (c *Compensation) HTTPMethod() string {
	if c.Method == "" {
		return DefaultMethod
	}
	return c.Method
}

// RetryPolicy bounds the attempts of a step and the waits between them.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included. Defaults to 1.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BackoffMS is the wait before the second attempt. Defaults to DefaultBackoffMS.
	BackoffMS int `json:"backoff_ms,omitempty"`
	// MaxBackoffMS caps every wait. Defaults to DefaultMaxBackoffMS.
	MaxBackoffMS int `json:"max_backoff_ms,omitempty"`
	// Multiplier grows the wait after each attempt. Defaults to DefaultMultiplier.
	Multiplier float64 `json:"multiplier,omitempty"`
	// Jitter is the fraction of each wait that is randomised, 0 to 1. Defaults to DefaultJitter.
	// Use a pointer so that an explicit 0 disables it.
	Jitter *float64 `json:"jitter,omitempty"`
}

// Schema is a named, versioned JSON Schema.
type Schema struct {
	ID         string `json:"id"`
	ProviderID string `json:"provider_id,omitempty"`
	Name       string `json:"name,omitempty"`
	// Version is a label only; registrations are counted by revision.
	Version     string `json:"version,omitempty"`
	Type        string `json:"type,omitempty"` // input | output
	Description string `json:"description,omitempty"`
	Definition  any    `json:"definition"`

	Compiled *eval.Schema `json:"-"`
}

// Provider binds workflows to blob events.
type Provider struct {
	Provider  ProviderInfo      `json:"provider"`
	Workflows []ProviderBinding `json:"workflows"`
}

// ProviderInfo names a provider.
type ProviderInfo struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	Type string `json:"type,omitempty"`
}

// ProviderBinding triggers one workflow.
type ProviderBinding struct {
	WorkflowID string    `json:"workflow_id"`
	Priority   int       `json:"priority,omitempty"` // 0..100, higher runs first
	Triggers   []Trigger `json:"triggers"`
}

// Trigger matches a blob event: the event kind and every condition.
type Trigger struct {
	Event      string             `json:"event"` // onCreate | onUpdate | onDelete
	Conditions []TriggerCondition `json:"conditions,omitempty"`
}

// TriggerCondition compares a field of the blob event data with a value.
type TriggerCondition struct {
	Field    string `json:"field"` // dotted path into the event data, e.g. metadata.type
	Operator string `json:"operator"`
	Value    any    `json:"value,omitempty"`
}

// WithDefaults returns the policy with every unset field at its default.
func (r RetryPolicy) WithDefaults() RetryPolicy {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 1
	}
	if r.BackoffMS <= 0 {
		r.BackoffMS = DefaultBackoffMS
	}
	if r.MaxBackoffMS <= 0 {
		r.MaxBackoffMS = DefaultMaxBackoffMS
	}
	if r.Multiplier <= 0 {
		r.Multiplier = DefaultMultiplier
	}
	if r.Jitter == nil {
		j := DefaultJitter
		r.Jitter = &j
	}
	return r
}

// CompiledWorkflow holds the compiled expressions of a workflow, in step order. It is built
// once, when the workflow is loaded or decoded, and is safe for concurrent use.
type CompiledWorkflow struct {
	Steps []CompiledStep
	// OutputMap is nil when the workflow has no output_map.
	OutputMap *eval.Mapping
}

// CompiledStep holds the compiled expressions of one step. A nil field means the step has no
// such setting.
type CompiledStep struct {
	Condition *eval.Condition
	// Input is evaluated over the execution scope ($.input, $.steps, ...).
	Input *eval.Mapping
	// Output is evaluated over the HTTP response body ($ is the body).
	Output *eval.Mapping
	// Endpoint is the path template; its {name} parameters are filled from the resolved input.
	Endpoint             *eval.PathTemplate
	CompensationInput    *eval.Mapping
	CompensationEndpoint *eval.PathTemplate
}
