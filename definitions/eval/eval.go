package eval

// Scope builds the execution scope that input maps, templates and conditions see.
//
//	$.input                the execution's input
//	$.steps.<id>.output    a finished step's output
//	$.steps.<id>.status    "succeeded", "failed", "skipped", ... of a step
//	$.execution.id         the execution id
//	$.provider_id          the provider of the workflow
//	$.workflow.id, ...     the workflow's id, name, provider_id, revision
//	$.vars.<name>          values exported by earlier steps' variables
type Scope = map[string]any

// Bounds on what a definition may ask of the evaluator, so that a hostile definition can neither
// blow the stack nor burn the CPU.
const (
	// MaxSourceLen bounds the length in bytes of a path, template, endpoint or condition.
	MaxSourceLen = 64 << 10
	// MaxMappingDepth bounds the nesting of maps and lists in a mapping.
	MaxMappingDepth = 32
	// MaxConditionNodes bounds the size of a condition's syntax tree.
	MaxConditionNodes = 1000
	// ConditionMemoryBudget bounds what one condition evaluation may allocate, counted by the
	// expr VM in elements (range items, list and map literal entries).
	ConditionMemoryBudget = 10_000
)
