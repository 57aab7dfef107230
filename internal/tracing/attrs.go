package tracing

import "go.opentelemetry.io/otel/attribute"

// Span attributes of memmie's spans.
const (
	ExecutionID = attribute.Key("memmie.execution_id")
	WorkflowID  = attribute.Key("memmie.workflow_id")
	StepID      = attribute.Key("memmie.step_id")
	BlobID      = attribute.Key("memmie.blob_id")
	EventID     = attribute.Key("memmie.event_id")
	Attempt     = attribute.Key("memmie.attempt")
	Service     = attribute.Key("memmie.service")
)
