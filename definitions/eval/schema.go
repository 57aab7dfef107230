package eval

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schema is a compiled JSON Schema. It is safe for concurrent use.
type Schema struct {
	id     string
	schema *jsonschema.Schema
}

// schemaPrinter renders the library's messages.
var schemaPrinter = message.NewPrinter(language.English)

// CompileSchema compiles a JSON Schema document (draft 2020-12 by default; $schema selects older
// drafts). Formats such as uuid are asserted.
//
// doc is decoded JSON or YAML (integers of any Go type are accepted). A schema is
// self-contained: $ref may point inside the document, but a $ref to another document (an http
// URL, a file, another schema id) fails to compile; nothing is ever fetched.
func CompileSchema(id string, doc any) (*Schema, error) {
	s, err := compileSchema(id, doc)
	if err != nil {
		return nil, fmt.Errorf("compile schema %q: %w", id, err)
	}
	return s, nil
}

func compileSchema(id string, doc any) (*Schema, error) {
	norm, err := normalize(doc, maxDataDepth)
	if err != nil {
		return nil, err
	}
	switch norm.(type) {
	case map[string]any, bool:
	default:
		return nil, fmt.Errorf("a schema is an object or a boolean, not a %s", jsonTypeName(norm))
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	loc := "memmie://schemas/" + url.PathEscape(id)
	if err := c.AddResource(loc, norm); err != nil {
		return nil, err
	}
	sch, err := c.Compile(loc)
	if err != nil {
		var serr *jsonschema.SchemaValidationError
		var verr *jsonschema.ValidationError
		if errors.As(err, &serr) && errors.As(serr.Err, &verr) {
			// The metaschema's verdict, as one line per problem in the schema document.
			return nil, fmt.Errorf("not a valid schema: %s", strings.Join(problems(verr), "; "))
		}
		return nil, err
	}
	return &Schema{id: id, schema: sch}, nil
}

// noLoader refuses every document the compiler does not already hold: definitions are
// self-contained, and compiling one must not reach the network or the disk.
type noLoader struct{}

func (noLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("$ref to %s: references to other documents are not supported; keep the schema self-contained", u)
}

// ID returns the id the schema was compiled with.
func (s *Schema) ID() string { return s.id }

// ValidationError lists every way a value breaks a schema.
type ValidationError struct {
	// SchemaID is the id the schema was compiled with.
	SchemaID string
	// Problems has one line per violation: the instance location as a JSON pointer, then what
	// is wrong, as in "/blob_id: 'x' is not valid uuid". The root is "/".
	Problems []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid against schema %s: %s", e.SchemaID, strings.Join(e.Problems, "; "))
}

// Validate returns nil, or an error listing every violation with its instance location. The
// error is a *ValidationError unless v is not JSON data at all.
//
// v is JSON data as encoding/json decodes it (float64 numbers); YAML-decoded values and other
// number types are accepted too.
func (s *Schema) Validate(v any) error {
	norm, err := normalize(v, maxDataDepth)
	if err != nil {
		return fmt.Errorf("validate against schema %s: %w", s.id, err)
	}
	err = s.schema.Validate(norm)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validate against schema %s: %w", s.id, err)
	}
	return &ValidationError{SchemaID: s.id, Problems: problems(verr)}
}

// problems lists the violations of a validation error, sorted so that the same value always
// gives the same list (the library walks maps).
func problems(e *jsonschema.ValidationError) []string {
	var out []string
	collectProblems(e, &out)
	slices.Sort(out)
	return slices.Compact(out)
}

// collectProblems appends the leaves of the library's error tree: the violations themselves,
// not the "allOf failed" nodes above them.
func collectProblems(e *jsonschema.ValidationError, out *[]string) {
	if len(e.Causes) == 0 {
		// Lists the library builds by walking the instance come in map order.
		switch k := e.ErrorKind.(type) {
		case *kind.AdditionalProperties:
			slices.Sort(k.Properties)
		case *kind.Required:
			slices.Sort(k.Missing)
		}
		ptr := "/" + strings.Join(escapePointer(e.InstanceLocation), "/")
		*out = append(*out, ptr+": "+e.ErrorKind.LocalizedString(schemaPrinter))
		return
	}
	for _, c := range e.Causes {
		collectProblems(c, out)
	}
}

// escapePointer escapes JSON pointer tokens (RFC 6901).
func escapePointer(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
	}
	return out
}
