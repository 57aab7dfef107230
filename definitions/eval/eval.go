// Package eval compiles and evaluates the references, templates and conditions of workflow
// definitions. It is pure: a compiled value and a scope in, a value out; no I/O, no clock.
//
// A scope is plain JSON data (map[string]any, []any, string, float64, bool, nil), as produced by
// encoding/json with UseNumber off. The execution scope has the roots input, steps,
// execution, provider_id, workflow and vars (see Scope).
//
// Missing paths: a reference to a path that does not exist evaluates to null. In a string
// template null renders as the empty string. In an endpoint path parameter a missing or null
// value is an error naming the parameter, because an empty segment would address another
// resource.
package eval

import "errors"

// ErrNotImplemented marks the API skeleton; it disappears when the package is filled in.
var ErrNotImplemented = errors.New("eval: not implemented")

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

// Path is a compiled JSONPath reference such as $.steps.load.output.content.
type Path struct{ src string }

// CompilePath compiles a JSONPath reference. It must be a singular query starting at $.
func CompilePath(src string) (*Path, error) { return nil, ErrNotImplemented }

// Eval returns the value at the path, or nil when the path does not exist.
func (p *Path) Eval(scope any) any { return nil }

// String returns the source.
func (p *Path) String() string { return p.src }

// Template is a string with {$.path} placeholders.
type Template struct{ src string }

// CompileTemplate compiles a string template.
func CompileTemplate(src string) (*Template, error) { return nil, ErrNotImplemented }

// Render fills the placeholders: strings as they are, numbers, booleans, objects and lists as
// JSON, null and missing as the empty string.
func (t *Template) Render(scope any) (string, error) { return "", ErrNotImplemented }

// PathTemplate is an endpoint path such as /blobs/{blob_id}; each {name} is filled from the
// step's resolved input and URL-path-escaped.
type PathTemplate struct{ src string }

// CompilePathTemplate compiles an endpoint. It rejects absolute URLs and ".." segments.
func CompilePathTemplate(src string) (*PathTemplate, error) { return nil, ErrNotImplemented }

// Params returns the parameter names, in order.
func (t *PathTemplate) Params() []string { return nil }

// Expand fills the parameters from the resolved input object.
func (t *PathTemplate) Expand(input map[string]any) (string, error) { return "", ErrNotImplemented }

// Condition is a compiled boolean expression over the scope, such as
// $.steps.validate.output.valid == true && $.input.size > 10.
type Condition struct{ src string }

// CompileCondition compiles an expression once; evaluation is bounded in cost.
func CompileCondition(src string) (*Condition, error) { return nil, ErrNotImplemented }

// Eval evaluates the condition. A non-boolean result is an error.
func (c *Condition) Eval(scope any) (bool, error) { return false, ErrNotImplemented }

// Mapping is a compiled input_map or output_map: nested maps and lists whose strings are
// references ("$.x"), templates ("... {$.x} ...") or literals.
type Mapping struct{}

// CompileMapping compiles a map or list tree.
func CompileMapping(tree any) (*Mapping, error) { return nil, ErrNotImplemented }

// Eval resolves the mapping over the scope and returns fresh JSON data.
func (m *Mapping) Eval(scope any) (any, error) { return nil, ErrNotImplemented }

// Refs returns every reference the mapping, template or condition reads, such as
// "$.steps.load.output.content", for load-time checks.
func (m *Mapping) Refs() []string { return nil }

// Schema is a compiled JSON Schema.
type Schema struct{}

// CompileSchema compiles a JSON Schema document (draft 2020-12 by default; $schema selects older
// drafts). Formats such as uuid are asserted.
func CompileSchema(id string, doc any) (*Schema, error) { return nil, ErrNotImplemented }

// Validate returns nil, or an error listing every violation with its instance location.
func (s *Schema) Validate(v any) error { return ErrNotImplemented }
