package definitions

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/memmie/memmie/definitions/eval"
)

var (
	// idPattern is the shape of schema, workflow and provider ids. They appear as one token of
	// a NATS subject (memmie.definitions.workflows.<id>) and in URL paths, so '.', '*', '>', '/'
	// and white space are out.
	idPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_:-]*$`)
	// identPattern is the shape of step ids and variable names, which appear in references
	// ($.steps.<id>.output) and in condition expressions.
	identPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// servicePattern is the shape of a service name; MEMMIE_SERVICE_<NAME>_URL names it too.
	servicePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
)

// MaxSteps bounds a workflow's steps. Every step adds at least three events to a run's history
// (scheduled, reported, a result), and its compensation three more; each decision reads the
// state of every step. At 100 steps a run without retries writes at most some 600 events, well
// under the history's bound (execution.MaxHistoryEvents), and a decision stays cheap. A
// compensation belongs to its step and does not count as one.
const MaxSteps = 100

// httpMethods are the methods an api_call step or a compensation may use.
var httpMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}

// scopeRoots are the roots of the execution scope that input maps, conditions and the
// workflow's output_map may read (see eval.Scope).
var scopeRoots = []string{"input", "steps", "execution", "provider_id", "workflow", "vars"}

func checkID(r *reporter, field, id string, required bool) {
	switch {
	case id == "":
		if required {
			r.add(field, "is required")
		}
	case len(id) > MaxIDLength:
		r.add(field, "is %d characters long; the limit is %d", len(id), MaxIDLength)
	case !idPattern.MatchString(id):
		r.add(field, "%q is not a valid id: use letters, digits, '_', '-' and ':', starting with a letter, digit or '_'", id)
	}
}

// checkWorkflow runs every check on a workflow and compiles it. The compiled form is nil when
// there is any problem.
func checkWorkflow(r *reporter, w *Workflow) *CompiledWorkflow {
	before := len(r.probs)
	checkID(r, "id", w.ID, true)
	checkID(r, "provider_id", w.ProviderID, false)
	checkID(r, "input_schema_id", w.InputSchemaID, false)
	checkID(r, "output_schema_id", w.OutputSchemaID, false)
	checkTimeout(r, "timeout_seconds", w.TimeoutSeconds, MaxWorkflowTimeoutSeconds)
	switch n := len(w.Steps); {
	case n == 0:
		r.add("steps", "at least one step is required")
	case n > MaxSteps:
		r.add("steps", "%d steps, at most %d", n, MaxSteps)
	}

	c := &workflowChecker{r: r, w: w, steps: map[string]int{}, vars: map[string]int{}}
	for i, s := range w.Steps {
		field := index("steps", i)
		if s.ID == "" {
			continue
		}
		if j, dup := c.steps[s.ID]; dup {
			r.add(join(field, "id"), "duplicate step id %q (also steps[%d])", s.ID, j)
			continue
		}
		c.steps[s.ID] = i
		for _, v := range s.Variables {
			if _, seen := c.vars[v]; !seen {
				c.vars[v] = i
			}
		}
	}

	compiled := &CompiledWorkflow{Steps: make([]CompiledStep, len(w.Steps))}
	for i := range w.Steps {
		compiled.Steps[i] = c.step(i)
	}
	if w.OutputMap != nil {
		compiled.OutputMap = c.mapping("output_map", w.OutputMap, len(w.Steps))
	}
	if len(r.probs) > before {
		return nil
	}
	return compiled
}

type workflowChecker struct {
	r *reporter
	w *Workflow
	// steps maps each step id to the index of its first step; vars maps each exported
	// variable to the index of the first step exporting it.
	steps map[string]int
	vars  map[string]int
}

func (c *workflowChecker) step(i int) CompiledStep {
	r, s, field := c.r, &c.w.Steps[i], index("steps", i)
	var out CompiledStep

	switch {
	case s.ID == "":
		r.add(join(field, "id"), "is required")
	case len(s.ID) > MaxStepIDLength:
		r.add(join(field, "id"), "is %d characters long; the limit is %d", len(s.ID), MaxStepIDLength)
	case !identPattern.MatchString(s.ID):
		r.add(join(field, "id"), "%q is not a valid step id: use letters, digits and '_', not starting with a digit", s.ID)
	}

	switch s.Type {
	case "":
		r.add(join(field, "type"), "is required (api_call or transform)")
	case StepAPICall:
		checkService(r, join(field, "service"), s.Service)
		out.Endpoint = checkEndpoint(r, join(field, "endpoint"), s.Endpoint)
		checkMethod(r, join(field, "method"), s.Method)
		if out.Endpoint != nil {
			for _, p := range out.Endpoint.Params() {
				if _, ok := s.InputMap[p]; !ok {
					r.add(join(field, "endpoint"), "parameter {%s} is not a key of input_map", p)
				}
			}
		}
	case StepTransform:
		for _, f := range []struct {
			name string
			set  bool
		}{{"service", s.Service != ""}, {"endpoint", s.Endpoint != ""}, {"method", s.Method != ""},
			{"output_map", s.OutputMap != nil}, {"compensation", s.Compensation != nil}} {
			if f.set {
				r.add(join(field, f.name), "a transform step has no %s: its output is its resolved input_map", f.name)
			}
		}
		if len(s.InputMap) == 0 {
			r.add(join(field, "input_map"), "is required: a transform step's output is its resolved input_map")
		}
	default:
		r.add(join(field, "type"), "unknown step type %q (use api_call or transform)", s.Type)
	}

	if s.InputMap != nil {
		out.Input = c.mapping(join(field, "input_map"), s.InputMap, i)
	}
	if s.OutputMap != nil && s.Type != StepTransform {
		out.Output = c.mapping(join(field, "output_map"), s.OutputMap, -1)
	}
	if s.Condition != "" {
		out.Condition = c.condition(join(field, "condition"), s.Condition, i)
	}
	c.variables(join(field, "variables"), s)
	checkTimeout(r, join(field, "timeout_seconds"), s.TimeoutSeconds, MaxStepTimeoutSeconds)
	if s.Retry != nil {
		checkRetry(r, join(field, "retry"), s.Retry)
	}
	switch s.OnFailure {
	case "", OnFailureFail, OnFailureContinue:
	default:
		r.add(join(field, "on_failure"), "unknown value %q (use fail or continue)", s.OnFailure)
	}

	if comp := s.Compensation; comp != nil && s.Type != StepTransform {
		cf := join(field, "compensation")
		checkService(r, join(cf, "service"), comp.Service)
		out.CompensationEndpoint = checkEndpoint(r, join(cf, "endpoint"), comp.Endpoint)
		checkMethod(r, join(cf, "method"), comp.Method)
		if comp.InputMap != nil {
			// A compensation runs after its step succeeded: it may read the step's own output.
			out.CompensationInput = c.mapping(join(cf, "input_map"), comp.InputMap, i+1)
		}
		if out.CompensationEndpoint != nil {
			for _, p := range out.CompensationEndpoint.Params() {
				if _, ok := comp.InputMap[p]; !ok {
					r.add(join(cf, "endpoint"), "parameter {%s} is not a key of input_map", p)
				}
			}
		}
	}
	return out
}

// variables checks the names a step exports into $.vars. When the step's output has a known
// shape (an output_map, or a transform's input_map) every name must be one of its keys.
func (c *workflowChecker) variables(field string, s *Step) {
	keys, known := s.OutputMap, s.OutputMap != nil
	if s.Type == StepTransform {
		keys, known = s.InputMap, true
	}
	seen := map[string]bool{}
	for j, v := range s.Variables {
		vf := index(field, j)
		switch {
		case !identPattern.MatchString(v) || len(v) > MaxStepIDLength:
			c.r.add(vf, "%q is not a valid variable name: use at most %d letters, digits and '_', not starting with a digit", v, MaxStepIDLength)
		case seen[v]:
			c.r.add(vf, "duplicate variable %q", v)
		case known && !hasKey(keys, v):
			what := "output_map"
			if s.Type == StepTransform {
				what = "input_map"
			}
			c.r.add(vf, "variable %q is not a key of the step's %s", v, what)
		}
		seen[v] = true
	}
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// mapping compiles an input or output map. Each string is compiled on its own first, by the
// rule of eval.Mapping (a reference, a template or a literal), so that a syntax error or a bad
// reference is reported at its own key. Scope references may read the steps before index
// limit; limit -1 means the map is evaluated over a response body, not the scope.
func (c *workflowChecker) mapping(field string, tree map[string]any, limit int) *eval.Mapping {
	before := len(c.r.probs)
	walkStrings(field, tree, func(path, s string) {
		var refs []string
		switch {
		case s == "$" || strings.HasPrefix(s, "$.") || strings.HasPrefix(s, "$["):
			p, err := eval.CompilePath(s)
			if err != nil {
				c.r.add(path, "%v", err)
				return
			}
			refs = p.Refs()
		case strings.Contains(s, "{$"):
			t, err := eval.CompileTemplate(s)
			if err != nil {
				c.r.add(path, "%v", err)
				return
			}
			refs = t.Refs()
		}
		if limit >= 0 {
			c.refs(path, refs, limit)
		}
	})
	if len(c.r.probs) > before {
		return nil
	}
	m, err := eval.CompileMapping(tree)
	if err != nil {
		c.r.add(field, "%v", err)
		return nil
	}
	return m
}

func (c *workflowChecker) condition(field, src string, limit int) *eval.Condition {
	cond, err := eval.CompileCondition(src)
	if err != nil {
		c.r.add(field, "%v", err)
		return nil
	}
	c.refs(field, cond.Refs(), limit)
	return cond
}

// refs checks that every reference reads a known root of the scope, and that step outputs
// and variables come from steps before index limit.
func (c *workflowChecker) refs(field string, refs []string, limit int) {
	for _, ref := range refs {
		root, name, ok := refHead(ref)
		if !ok || root == "" {
			continue
		}
		switch root {
		case "steps":
			name, ok := eval.StepRef(ref)
			if !ok {
				continue
			}
			j, exists := c.steps[name]
			switch {
			case !exists:
				c.r.add(field, "%s refers to unknown step %q", ref, name)
			case j >= limit:
				c.r.add(field, "%s refers to step %q, which does not run before this step", ref, name)
			}
		case "vars":
			if name == "" || name == "*" {
				continue
			}
			j, exists := c.vars[name]
			switch {
			case !exists:
				c.r.add(field, "%s: no step exports variable %q (see variables)", ref, name)
			case j >= limit:
				c.r.add(field, "%s: variable %q is exported by step %q, which does not run before this step", ref, name, c.w.Steps[j].ID)
			}
		default:
			if !slices.Contains(scopeRoots, root) {
				c.r.add(field, "%s: unknown root $.%s (use $.%s)", ref, root, strings.Join(scopeRoots, ", $."))
			}
		}
	}
}

// refHead returns the first two segments of a reference: "$.steps.load.output" gives
// ("steps", "load"). It understands dot and bracket notation; ok is false when it cannot read
// the reference (eval has accepted it, so it is left alone).
func refHead(ref string) (root, name string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(ref), "$")
	if !found {
		return "", "", false
	}
	var segs []string
	for len(segs) < 2 && rest != "" {
		var seg string
		switch {
		case rest[0] == '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			seg, rest = rest[:end], rest[end:]
		case strings.HasPrefix(rest, "['") || strings.HasPrefix(rest, `["`):
			quote := rest[1]
			end := strings.IndexByte(rest[2:], quote)
			if end < 0 || len(rest) < end+4 || rest[end+3] != ']' {
				return "", "", false
			}
			seg, rest = rest[2:end+2], rest[end+4:]
		default:
			return "", "", false
		}
		segs = append(segs, seg)
	}
	switch len(segs) {
	case 0:
		return "", "", true
	case 1:
		return segs[0], "", true
	}
	return segs[0], segs[1], true
}

// walkStrings calls fn for every string in a JSON tree, in a stable order.
func walkStrings(path string, v any, fn func(path, s string)) {
	switch v := v.(type) {
	case string:
		fn(path, v)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walkStrings(join(path, k), v[k], fn)
		}
	case []any:
		for i, item := range v {
			walkStrings(index(path, i), item, fn)
		}
	}
}

func checkService(r *reporter, field, name string) {
	switch {
	case name == "":
		r.add(field, "is required")
	case len(name) > MaxStepIDLength || !servicePattern.MatchString(name):
		r.add(field, "%q is not a valid service name: use letters, digits, '_' and '-', starting with a letter", name)
	}
}

// checkEndpoint checks an endpoint path and compiles it.
func checkEndpoint(r *reporter, field, endpoint string) *eval.PathTemplate {
	switch {
	case endpoint == "":
		r.add(field, "is required")
		return nil
	case strings.Contains(endpoint, "://") || strings.HasPrefix(endpoint, "//"):
		r.add(field, "%q is an absolute URL: give a path, the service's base_url comes from the services file", endpoint)
		return nil
	case !strings.HasPrefix(endpoint, "/"):
		r.add(field, "%q must start with /", endpoint)
		return nil
	case strings.Contains(endpoint, ".."):
		r.add(field, "%q must not contain ..", endpoint)
		return nil
	}
	t, err := eval.CompilePathTemplate(endpoint)
	if err != nil {
		r.add(field, "%v", err)
		return nil
	}
	return t
}

func checkMethod(r *reporter, field, method string) {
	if method != "" && !slices.Contains(httpMethods, method) {
		r.add(field, "unknown HTTP method %q (use %s)", method, strings.Join(httpMethods, ", "))
	}
}

func checkTimeout(r *reporter, field string, seconds, max int) {
	switch {
	case seconds < 0:
		r.add(field, "must not be negative")
	case seconds > max:
		r.add(field, "%d is more than the maximum of %d", seconds, max)
	}
}

func checkRetry(r *reporter, field string, p *RetryPolicy) {
	bound := func(name string, v, max int) {
		switch {
		case v < 0:
			r.add(join(field, name), "must not be negative")
		case v > max:
			r.add(join(field, name), "%d is more than the maximum of %d", v, max)
		}
	}
	bound("max_attempts", p.MaxAttempts, MaxAttempts)
	bound("backoff_ms", p.BackoffMS, MaxBackoffMS)
	bound("max_backoff_ms", p.MaxBackoffMS, MaxBackoffMS)
	if p.BackoffMS > 0 && p.MaxBackoffMS > 0 && p.BackoffMS > p.MaxBackoffMS && p.MaxBackoffMS <= MaxBackoffMS {
		r.add(join(field, "backoff_ms"), "%d is more than max_backoff_ms (%d)", p.BackoffMS, p.MaxBackoffMS)
	}
	switch m := p.Multiplier; {
	case m < 0:
		r.add(join(field, "multiplier"), "must not be negative")
	case m > 0 && m < 1:
		r.add(join(field, "multiplier"), "%g would shrink the waits; use 1 or more", m)
	case m > MaxMultiplier:
		r.add(join(field, "multiplier"), "%g is more than the maximum of %g", m, MaxMultiplier)
	}
	if j := p.Jitter; j != nil && (*j < 0 || *j > 1) {
		r.add(join(field, "jitter"), "%g is not a fraction between 0 and 1", *j)
	}
}

// checkSchema runs every check on a schema and compiles its definition.
func checkSchema(r *reporter, s *Schema) *eval.Schema {
	before := len(r.probs)
	checkID(r, "id", s.ID, true)
	checkID(r, "provider_id", s.ProviderID, false)
	switch s.Type {
	case "", SchemaInput, SchemaOutput:
	default:
		r.add("type", "unknown schema type %q (use input or output)", s.Type)
	}
	if s.Definition == nil {
		r.add("definition", "is required: a JSON Schema")
		return nil
	}
	if len(r.probs) > before {
		return nil
	}
	compiled, err := eval.CompileSchema(s.ID, s.Definition)
	if err != nil {
		r.add("definition", "not a valid JSON Schema: %v", err)
		return nil
	}
	return compiled
}

// checkProvider runs every check on a provider.
func checkProvider(r *reporter, p *Provider) {
	checkID(r, "provider.id", p.Provider.ID, true)
	if p.Workflows == nil {
		r.add("workflows", "is required: a list of workflow bindings")
	}
	seen := map[string]int{}
	for i, b := range p.Workflows {
		field := index("workflows", i)
		checkID(r, join(field, "workflow_id"), b.WorkflowID, true)
		if j, dup := seen[b.WorkflowID]; dup && b.WorkflowID != "" {
			r.add(join(field, "workflow_id"), "workflow %q is bound twice (also workflows[%d]); list its triggers in one binding", b.WorkflowID, j)
		} else {
			seen[b.WorkflowID] = i
		}
		if b.Priority < MinPriority || b.Priority > MaxPriority {
			r.add(join(field, "priority"), "%d is outside %d..%d", b.Priority, MinPriority, MaxPriority)
		}
		if len(b.Triggers) == 0 {
			r.add(join(field, "triggers"), "at least one trigger is required")
		}
		for j, t := range b.Triggers {
			checkTrigger(r, index(join(field, "triggers"), j), t)
		}
	}
}

func checkTrigger(r *reporter, field string, t Trigger) {
	switch t.Event {
	case "":
		r.add(join(field, "event"), "is required (%s)", strings.Join(triggerEvents, ", "))
	default:
		if !slices.Contains(triggerEvents, t.Event) {
			r.add(join(field, "event"), "unknown event %q (use %s)", t.Event, strings.Join(triggerEvents, ", "))
		}
	}
	for i, c := range t.Conditions {
		if err := c.check(); err != nil {
			cf := index(join(field, "conditions"), i)
			r.add(join(cf, err.field), "%s", err.msg)
		}
	}
}

// conditionError names the field of a trigger condition that is wrong.
type conditionError struct{ field, msg string }

func (e *conditionError) Error() string { return fmt.Sprintf("%s: %s", e.field, e.msg) }

// check reports the first thing wrong with a condition.
func (c TriggerCondition) check() *conditionError {
	if c.Field == "" {
		return &conditionError{"field", "is required"}
	}
	for _, seg := range strings.Split(c.Field, ".") {
		if seg == "" {
			return &conditionError{"field", fmt.Sprintf("%q is not a dotted path such as metadata.type", c.Field)}
		}
	}
	if c.Operator == "" {
		return &conditionError{"operator", fmt.Sprintf("is required (%s)", strings.Join(operators, ", "))}
	}
	if !slices.Contains(operators, c.Operator) {
		return &conditionError{"operator", fmt.Sprintf("unknown operator %q (use %s)", c.Operator, strings.Join(operators, ", "))}
	}
	switch c.Operator {
	case OpExists:
		if _, ok := c.Value.(bool); c.Value != nil && !ok {
			return &conditionError{"value", "must be true or false for exists"}
		}
	case OpIn, OpNotIn:
		if _, ok := c.Value.([]any); !ok {
			return &conditionError{"value", fmt.Sprintf("must be a list for %s", c.Operator)}
		}
	case OpGt, OpGte, OpLt, OpLte:
		if _, ok := toNumber(c.Value); !ok {
			if _, ok := c.Value.(string); !ok {
				return &conditionError{"value", fmt.Sprintf("must be a number or a string for %s", c.Operator)}
			}
		}
	case OpMatches:
		s, ok := c.Value.(string)
		if !ok {
			return &conditionError{"value", "must be a regular expression (a string) for matches"}
		}
		if _, err := compileRegexp(s); err != nil {
			return &conditionError{"value", fmt.Sprintf("not a valid regular expression: %v", err)}
		}
	default:
		if c.Value == nil {
			return &conditionError{"value", fmt.Sprintf("is required for %s (use exists to test for null)", c.Operator)}
		}
	}
	return nil
}
