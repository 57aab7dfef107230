// Package eval compiles and evaluates the references, templates and conditions of workflow
// definitions. It is pure: a compiled value and a scope in, a value out; no I/O, no clock, no
// state changed after compilation. Compiled values are immutable and safe for concurrent use.
// Everything is compiled once, when a definition is loaded, so that a bad reference fails the
// registration rather than an execution.
//
// A scope is plain JSON data (map[string]any, []any, string, float64, bool, nil), as produced by
// encoding/json with UseNumber off. The execution scope has the roots input, steps,
// execution, provider_id, workflow and vars (see Scope). A step's output_map is evaluated over
// the HTTP response body instead: there $.content reads the body's content.
//
// The pieces:
//
//   - Path: a JSONPath reference (RFC 9535, singular queries only), $.steps.load.output.content.
//   - Template: a string with {$.path} placeholders, "Hello {$.input.name}".
//   - PathTemplate: an endpoint, /blobs/{blob_id}, filled from the step's resolved input.
//   - Condition: a boolean expr expression over $, $.steps.validate.output.valid == true.
//   - Mapping: an input_map or output_map, a tree whose strings are references, templates or
//     literals.
//   - Schema: a JSON Schema (draft 2020-12 by default) with formats asserted.
//
// Missing paths: a reference to a path that does not exist evaluates to null. In a string
// template null renders as the empty string. In a condition null compares equal only to nil. In
// an endpoint path parameter a missing or null value is an error naming the parameter, because
// an empty segment would address another resource.
//
// Refs (on Mapping, Template, Condition and Path) list what a definition reads in canonical
// form, and StepRefs picks out the step ids, so the loader can check that every referenced step
// exists and runs earlier.
//
// Usage:
//
//	in, err := eval.CompileMapping(step.InputMap)       // at load time
//	...
//	resolved, err := in.Eval(scope)                    // at run time: fresh JSON data
//	ok, err := cond.Eval(scope)
//	path, err := endpoint.Expand(resolved.(map[string]any))
//
// The package must never perform I/O: schemas cannot $ref other documents, and no evaluation
// reads the clock.
package eval
