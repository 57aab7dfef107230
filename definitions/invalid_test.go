package definitions

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// problemLines returns the problems of err, one string each.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	require.Error(t, err)
	var probs Problems
	require.True(t, errors.As(err, &probs), "error %v is not Problems", err)
	out := make([]string, len(probs))
	for i, p := range probs {
		out[i] = p.String()
	}
	return out
}

// assertProblems checks that the problems are exactly want, each given as a prefix of its
// line: file:line: field: (start of the message).
func assertProblems(t *testing.T, err error, want []string) {
	t.Helper()
	got := problemLines(t, err)
	require.Len(t, got, len(want), "problems:\n%s", strings.Join(got, "\n"))
	for i := range want {
		assert.True(t, strings.HasPrefix(got[i], want[i]), "problem %d:\n got  %s\n want %s...", i, got[i], want[i])
	}
}

func TestProblemString(t *testing.T) {
	assert.Equal(t, "w.yaml:3: steps[0].id: is required", Problem{File: "w.yaml", Line: 3, Field: "steps[0].id", Message: "is required"}.String())
	assert.Equal(t, "w.yaml:1: the document is empty", Problem{File: "w.yaml", Line: 1, Message: "the document is empty"}.String())
	assert.Equal(t, "steps[0].id: is required", Problem{Field: "steps[0].id", Message: "is required"}.String())
	probs := Problems{{File: "a", Line: 1, Message: "x"}, {File: "b", Line: 2, Field: "f", Message: "y"}}
	assert.Equal(t, "a:1: x\nb:2: f: y", probs.Error())
	assert.NoError(t, Problems(nil).Err())
}

func TestInvalidDefinitions(t *testing.T) {
	tests := []struct {
		name string
		file string
		kind Kind // empty: told by content
		doc  string
		want []string
	}{
		// Workflows: structure.
		{name: "unknown top-level field", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
colour: red
`, want: []string{"w.yaml:7: colour: unknown field"}},
		{name: "unknown step field", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_mpa: {x: 1}
`, want: []string{
			"w.yaml:4: steps[0].input_map: is required",
			"w.yaml:6: steps[0].input_mpa: unknown field",
		}},
		{name: "missing workflow id", file: "w.yaml", kind: KindWorkflow, doc: `steps:
  - id: a
    type: transform
    input_map: {x: 1}
`, want: []string{"w.yaml:1: id: is required"}},
		{name: "no steps", file: "w.yaml", kind: KindWorkflow, doc: `id: wf
name: Nothing to do
`, want: []string{"w.yaml:1: steps: at least one step is required"}},
		{name: "missing step type", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    input_map: {x: 1}
`, want: []string{"w.yaml:4: steps[0].type: is required"}},
		{name: "duplicate step ids", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
  - id: a
    type: transform
    input_map: {x: 2}
`, want: []string{"w.yaml:7: steps[1].id: duplicate step id \"a\" (also steps[0])"}},
		{name: "duplicate key", file: "w.yaml", doc: `
id: wf
id: wf2
steps:
  - id: a
    type: transform
    input_map: {x: 1}
`, want: []string{"w.yaml:3: id: duplicate key"}},
		{name: "wrong scalar types", file: "w.yaml", doc: `
id: wf
active: "yes"
timeout_seconds: "30"
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    variables: x
`, want: []string{
			"w.yaml:3: active: must be true or false, not a string",
			"w.yaml:4: timeout_seconds: must be a whole number, not a string",
			"w.yaml:9: steps[0].variables: must be a list, not a string",
		}},
		{name: "steps is a mapping", file: "w.yaml", kind: KindWorkflow, doc: `
id: wf
steps:
  a:
    type: transform
`, want: []string{"w.yaml:3: steps: must be a list, not a mapping"}},

		// Workflows: ids.
		{name: "invalid ids", file: "w.yaml", doc: `
id: my.workflow
input_schema_id: "in put"
steps:
  - id: load-chapter
    type: transform
    input_map: {x: 1}
  - id: 2nd
    type: transform
    input_map: {x: 1}
`, want: []string{
			"w.yaml:2: id: \"my.workflow\" is not a valid id",
			"w.yaml:3: input_schema_id: \"in put\" is not a valid id",
			"w.yaml:5: steps[0].id: \"load-chapter\" is not a valid step id",
			"w.yaml:8: steps[1].id: \"2nd\" is not a valid step id",
		}},
		{name: "id too long", file: "w.yaml", doc: `
id: ` + strings.Repeat("a", MaxIDLength+1) + `
steps:
  - id: a
    type: transform
    input_map: {x: 1}
`, want: []string{"w.yaml:2: id: is 129 characters long; the limit is 128"}},

		// Workflows: step types, services, endpoints, methods.
		{name: "unknown step type", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: http
`, want: []string{"w.yaml:5: steps[0].type: unknown step type \"http\""}},
		{name: "api_call without service and endpoint", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    method: GET
`, want: []string{
			"w.yaml:4: steps[0].service: is required",
			"w.yaml:4: steps[0].endpoint: is required",
		}},
		{name: "unknown HTTP method", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /blobs
    method: FETCH
`, want: []string{"w.yaml:8: steps[0].method: unknown HTTP method \"FETCH\""}},
		{name: "lower-case method", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /blobs
    method: post
`, want: []string{"w.yaml:8: steps[0].method: unknown HTTP method \"post\""}},
		{name: "absolute URL endpoint", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: https://evil.example.com/x
`, want: []string{"w.yaml:7: steps[0].endpoint: \"https://evil.example.com/x\" is an absolute URL"}},
		{name: "endpoint with ..", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /blobs/../admin
`, want: []string{"w.yaml:7: steps[0].endpoint: \"/blobs/../admin\" must not contain .."}},
		{name: "relative endpoint", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: blobs
`, want: []string{"w.yaml:7: steps[0].endpoint: \"blobs\" must start with /"}},
		{name: "endpoint parameter missing from input_map", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /blobs/{blob_id}
    method: GET
`, want: []string{"w.yaml:7: steps[0].endpoint: parameter {blob_id} is not a key of input_map"}},
		{name: "invalid service name", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: "my service"
    endpoint: /x
`, want: []string{"w.yaml:6: steps[0].service: \"my service\" is not a valid service name"}},
		{name: "transform with service, endpoint and compensation", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    service: studio
    endpoint: /x
    input_map: {x: 1}
    compensation:
      service: studio
      endpoint: /undo
`, want: []string{
			"w.yaml:6: steps[0].service: a transform step has no service",
			"w.yaml:7: steps[0].endpoint: a transform step has no endpoint",
			"w.yaml:9: steps[0].compensation: a transform step has no compensation",
		}},
		{name: "transform without input_map", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
`, want: []string{"w.yaml:4: steps[0].input_map: is required"}},
		{name: "compensation without endpoint, bad method", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    compensation:
      service: studio
      method: UNDO
      colour: red
`, want: []string{
			"w.yaml:8: steps[0].compensation.endpoint: is required",
			"w.yaml:10: steps[0].compensation.method: unknown HTTP method \"UNDO\"",
			"w.yaml:11: steps[0].compensation.colour: unknown field",
		}},

		// Workflows: timeouts, retries, on_failure.
		{name: "negative step timeout, absurd workflow timeout", file: "w.yaml", doc: `
id: wf
timeout_seconds: 99999999
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    timeout_seconds: -5
`, want: []string{
			"w.yaml:3: timeout_seconds: 99999999 is more than the maximum of 604800",
			"w.yaml:8: steps[0].timeout_seconds: must not be negative",
		}},
		{name: "step timeout above maximum", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    timeout_seconds: 3601
`, want: []string{"w.yaml:7: steps[0].timeout_seconds: 3601 is more than the maximum of 3600"}},
		{name: "absurd retry", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    retry:
      max_attempts: 1000
      backoff_ms: -1
      max_backoff_ms: 7200000
      multiplier: 0.5
      jitter: 2
`, want: []string{
			"w.yaml:9: steps[0].retry.max_attempts: 1000 is more than the maximum of 100",
			"w.yaml:10: steps[0].retry.backoff_ms: must not be negative",
			"w.yaml:11: steps[0].retry.max_backoff_ms: 7200000 is more than the maximum of 3600000",
			"w.yaml:12: steps[0].retry.multiplier: 0.5 would shrink the waits",
			"w.yaml:13: steps[0].retry.jitter: 2 is not a fraction between 0 and 1",
		}},
		{name: "backoff above max_backoff", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    retry: {max_attempts: 3, backoff_ms: 5000, max_backoff_ms: 1000, multiplier: 11}
`, want: []string{
			"w.yaml:8: steps[0].retry.backoff_ms: 5000 is more than max_backoff_ms (1000)",
			"w.yaml:8: steps[0].retry.multiplier: 11 is more than the maximum of 10",
		}},
		{name: "retry attempts not a whole number", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    retry:
      max_attempts: 2.5
`, want: []string{"w.yaml:9: steps[0].retry.max_attempts: must be a whole number of reasonable size, not 2.5"}},
		{name: "unknown on_failure", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    on_failure: retry
`, want: []string{"w.yaml:7: steps[0].on_failure: unknown value \"retry\" (use fail or continue)"}},

		// Workflows: references and variables.
		{name: "reference to an unknown step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map:
      x: $.input.x
      y: $.steps.nope.output
`, want: []string{"w.yaml:8: steps[0].input_map.y: $.steps.nope.output refers to unknown step \"nope\""}},
		{name: "reference to a later step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map:
      nested:
        list:
          - $.steps.b.output.x
  - id: b
    type: transform
    input_map: {x: 1}
`, want: []string{"w.yaml:9: steps[0].input_map.nested.list[0]: $.steps.b.output.x refers to step \"b\", which does not run before this step"}},
		{name: "template reference to its own step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map:
      msg: "hello {$.steps.a.output.x}"
`, want: []string{"w.yaml:7: steps[0].input_map.msg: $.steps.a.output.x refers to step \"a\", which does not run before this step"}},
		{name: "condition reads a later step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    condition: $.steps.b.output.ok == true
  - id: b
    type: transform
    input_map: {ok: true}
`, want: []string{"w.yaml:7: steps[0].condition: $.steps.b.output.ok refers to step \"b\", which does not run before this step"}},
		{name: "condition syntax error", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    condition: $.input.x == == 1
`, want: []string{"w.yaml:7: steps[0].condition: "}},
		{name: "template and path syntax errors", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map:
      unclosed: "Hello {$.input.name"
      wildcard: $.steps[*]
      descendant: $.input..x
      fine: "{{$ is a literal brace"
`, want: []string{
			"w.yaml:7: steps[0].input_map.unclosed: compile template \"Hello {$.input.name\": at offset 6: unclosed placeholder",
			"w.yaml:8: steps[0].input_map.wildcard: compile path \"$.steps[*]\": not a singular query",
			"w.yaml:9: steps[0].input_map.descendant: compile path \"$.input..x\": not a singular query",
		}},
		{name: "condition calls an unknown function", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    condition: now() > 0
`, want: []string{"w.yaml:7: steps[0].condition: compile condition \"now() > 0\": at offset 0: "}},
		{name: "endpoint with a query string", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /search?q={q}
    input_map: {q: $.input.q}
`, want: []string{"w.yaml:7: steps[0].endpoint: compile endpoint \"/search?q={q}\": at offset 7: query strings and fragments are not allowed"}},
		{name: "compensation reads a later step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    compensation:
      service: studio
      endpoint: /undo/{id}
      input_map:
        id: $.steps.a.output.id
        later: $.steps.b.output
  - id: b
    type: transform
    input_map: {x: 1}
`, want: []string{"w.yaml:13: steps[0].compensation.input_map.later: $.steps.b.output refers to step \"b\", which does not run before this step"}},
		{name: "unknown scope root", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map:
      x: $.inputs.x
`, want: []string{"w.yaml:7: steps[0].input_map.x: $.inputs.x: unknown root $.inputs"}},
		{name: "variables", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: /x
    output_map:
      score: $.score
    variables: [score, bad-name, total]
  - id: b
    type: transform
    input_map:
      s: $.vars.score
      t: $.vars.missing
`, want: []string{
			"w.yaml:10: steps[0].variables[1]: \"bad-name\" is not a valid variable name",
			"w.yaml:10: steps[0].variables[2]: variable \"total\" is not a key of the step's output_map",
			"w.yaml:15: steps[1].input_map.t: $.vars.missing: no step exports variable \"missing\"",
		}},
		{name: "output_map reads unknown step", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
    type: transform
    input_map: {x: 1}
output_map:
  result: $.steps.a.output.x
  other: $.steps.b.output
`, want: []string{"w.yaml:9: output_map.other: $.steps.b.output refers to unknown step \"b\""}},

		// JSON input: line numbers too.
		{name: "JSON workflow", file: "w.json", doc: `{
  "id": "wf",
  "steps": [
    {"id": "a", "type": "transform", "input_map": {"x": 1}},
    {"id": "b", "type": "api_call", "service": "studio",
     "endpoint": "/x", "method": "GRAB"}
  ],
  "extra": true
}`, want: []string{
			"w.json:6: steps[1].method: unknown HTTP method \"GRAB\"",
			"w.json:8: extra: unknown field",
		}},
		{name: "JSON duplicate key", file: "w.json", doc: `{"id": "wf",
 "steps": [{"id": "a", "type": "transform", "input_map": {"x": 1, "x": 2}}]}`,
			want: []string{"w.json:2: steps[0].input_map.x: duplicate key"}},

		// Documents.
		{name: "YAML syntax error", file: "w.yaml", doc: `
id: wf
steps:
  - id: a
   type: transform
`, want: []string{"w.yaml:5: invalid YAML: did not find expected '-' indicator"}},
		{name: "empty document", file: "w.yaml", doc: "# nothing here\n", want: []string{"w.yaml:1: the document is empty"}},
		{name: "two documents", file: "w.yaml", kind: KindWorkflow, doc: `id: a
steps: []
---
id: b
`, want: []string{"w.yaml:3: a file holds one definition; found a second YAML document"}},
		{name: "kind cannot be told", file: "x.yaml", doc: `
id: something
name: What am I?
`, want: []string{"x.yaml:1: cannot tell the kind of definition"}},
		{name: "not a mapping", file: "w.yaml", kind: KindWorkflow, doc: `- a
- b
`, want: []string{"w.yaml:1: must be a mapping, not a list"}},
		{name: "merge key", file: "w.yaml", doc: `
base: &base {type: transform}
id: wf
steps:
  - <<: *base
    id: a
    input_map: {x: 1}
`, want: []string{
			"w.yaml:2: base: unknown field",
			"w.yaml:5: steps[0].<<: YAML merge keys (<<) are not supported",
			"w.yaml:5: steps[0].type: is required",
		}},

		// Schemas.
		{name: "schema type", file: "s.yaml", doc: `
id: s1
type: inputs
definition: {type: object}
`, want: []string{"s.yaml:3: type: unknown schema type \"inputs\" (use input or output)"}},
		{name: "schema without definition", file: "s.yaml", kind: KindSchema, doc: `
id: s1
type: input
`, want: []string{"s.yaml:1: definition: is required"}},
		{name: "schema version is a number", file: "s.yaml", doc: `
id: s1
version: 1.0
definition: {type: object}
`, want: []string{"s.yaml:3: version: must be a string, not a number (quote it: \"1.0\")"}},
		{name: "schema definition is not a JSON Schema", file: "s.yaml", doc: `
id: s1
definition:
  type: object
  properties:
    x:
      type: 12
`, want: []string{"s.yaml:3: definition: not a valid JSON Schema"}},
		{name: "schema with NaN", file: "s.yaml", doc: `
id: s1
definition:
  maximum: .nan
`, want: []string{"s.yaml:4: definition.maximum: .nan is not a finite JSON number"}},

		// Providers.
		{name: "provider without id", file: "p.yaml", doc: `
provider:
  name: Nameless
workflows: []
`, want: []string{"p.yaml:2: provider.id: is required"}},
		{name: "provider without workflows", file: "p.yaml", doc: `
provider: {id: p}
`, want: []string{"p.yaml:1: workflows: is required"}},
		{name: "binding priority, triggers", file: "p.yaml", doc: `
provider: {id: p}
workflows:
  - workflow_id: wf
    priority: 101
    triggers: []
  - workflow_id: wf
    priority: -1
    triggers:
      - event: onCreate
`, want: []string{
			"p.yaml:5: workflows[0].priority: 101 is outside 0..100",
			"p.yaml:6: workflows[0].triggers: at least one trigger is required",
			"p.yaml:7: workflows[1].workflow_id: workflow \"wf\" is bound twice (also workflows[0])",
			"p.yaml:8: workflows[1].priority: -1 is outside 0..100",
		}},
		{name: "trigger event and operators", file: "p.yaml", doc: `
provider: {id: p}
workflows:
  - workflow_id: wf
    triggers:
      - event: onChange
        conditions:
          - field: metadata.type
            operator: like
            value: chap%
          - field: metadata.type
            operator: in
            value: chapter
          - field: metadata.title
            operator: matches
            value: "("
          - field: metadata.type
            operator: exists
            value: "yes"
          - field: metadata..type
            operator: eq
            value: x
          - field: metadata.type
            operator: eq
          - field: metadata.size
            operator: gt
            value: [1]
`, want: []string{
			"p.yaml:6: workflows[0].triggers[0].event: unknown event \"onChange\"",
			"p.yaml:9: workflows[0].triggers[0].conditions[0].operator: unknown operator \"like\"",
			"p.yaml:13: workflows[0].triggers[0].conditions[1].value: must be a list for in",
			"p.yaml:16: workflows[0].triggers[0].conditions[2].value: not a valid regular expression",
			"p.yaml:19: workflows[0].triggers[0].conditions[3].value: must be true or false for exists",
			"p.yaml:20: workflows[0].triggers[0].conditions[4].field: \"metadata..type\" is not a dotted path",
			"p.yaml:23: workflows[0].triggers[0].conditions[5].value: is required for eq",
			"p.yaml:27: workflows[0].triggers[0].conditions[6].value: must be a number or a string for gt",
		}},
		{name: "provider info with unknown field", file: "p.yaml", doc: `
provider:
  id: p
  owner: me
workflows: []
`, want: []string{"p.yaml:4: provider.owner: unknown field"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A doc that starts with a newline has an empty line 1, as in the raw string.
			_, err := Parse(tt.file, []byte(tt.doc), tt.kind)
			assertProblems(t, err, tt.want)
		})
	}
	require.GreaterOrEqual(t, len(tests), 30)
}
