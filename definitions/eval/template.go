package eval

import (
	"errors"
	"fmt"
	"strings"
)

// Template is a string with {$.path} placeholders.
//
// A placeholder is "{" followed by a singular JSONPath reference and "}", as in
// "Hello {$.input.name}". The reference ends at the first "}" outside a quoted name, so
// {$['a}b']} reads the key "a}b". Only a "{" directly before "$" is special: braces are written
// as they are everywhere else ("{}" and {"a": 1} stay literal). To write a literal "{$", double
// the brace: "{{$" renders "{$". In general, in a run of n braces followed by "$", each pair
// renders one literal "{" and an odd last brace opens a placeholder, so "{{{$.x}" renders "{"
// followed by the value of $.x.
type Template struct {
	src   string
	parts []templatePart
}

// templatePart is literal text, or a placeholder when path is set.
type templatePart struct {
	text string
	path *Path
}

// TemplateError is a syntax error in a template, at a byte offset of its source.
type TemplateError struct {
	Offset int
	Err    error
}

func (e *TemplateError) Error() string { return fmt.Sprintf("at offset %d: %v", e.Offset, e.Err) }
func (e *TemplateError) Unwrap() error { return e.Err }

// CompileTemplate compiles a string template. Syntax errors (an unclosed placeholder, a bad
// path) are returned as a *TemplateError carrying the offset.
func CompileTemplate(src string) (*Template, error) {
	t, err := compileTemplate(src)
	if err != nil {
		return nil, fmt.Errorf("compile template %q: %w", abbreviate(src), err)
	}
	return t, nil
}

func compileTemplate(src string) (*Template, error) {
	if len(src) > MaxSourceLen {
		return nil, &TemplateError{Offset: MaxSourceLen, Err: fmt.Errorf("longer than %d bytes", MaxSourceLen)}
	}
	t := &Template{src: src}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, templatePart{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(src); {
		if src[i] != '{' {
			j := strings.IndexByte(src[i:], '{')
			if j < 0 {
				j = len(src) - i
			}
			lit.WriteString(src[i : i+j])
			i += j
			continue
		}
		n := 0
		for i+n < len(src) && src[i+n] == '{' {
			n++
		}
		if i+n == len(src) || src[i+n] != '$' {
			lit.WriteString(src[i : i+n])
			i += n
			continue
		}
		lit.WriteString(strings.Repeat("{", n/2))
		if n%2 == 0 {
			lit.WriteByte('$')
			i += n + 1
			continue
		}
		start := i + n - 1 // the brace that opens the placeholder
		end, err := placeholderEnd(src, start+1)
		if err != nil {
			return nil, &TemplateError{Offset: start, Err: err}
		}
		p, err := compilePath(src[start+1 : end])
		if err != nil {
			return nil, &TemplateError{Offset: start, Err: fmt.Errorf("placeholder %s: %w", src[start:end+1], err)}
		}
		flush()
		t.parts = append(t.parts, templatePart{path: p})
		i = end + 1
	}
	flush()
	return t, nil
}

var errUnclosed = errors.New(`unclosed placeholder: "{$" without a closing "}" (write "{{$" for a literal "{$")`)

// placeholderEnd returns the index of the "}" that closes the placeholder whose path starts at
// from: the first one outside a quoted name. JSONPath has no braces outside string literals, so
// quotes are all this scan needs to know; the path itself is parsed by the jsonpath library.
func placeholderEnd(src string, from int) (int, error) {
	var quote byte
	for i := from; i < len(src); i++ {
		c := src[i]
		switch {
		case quote != 0 && c == '\\':
			i++ // skip the escaped character
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '\'' || c == '"':
			quote = c
		case c == '}':
			return i, nil
		}
	}
	return 0, errUnclosed
}

// Render fills the placeholders: strings as they are, numbers, booleans, objects and lists as
// compact JSON, null and missing as the empty string.
func (t *Template) Render(scope any) (string, error) {
	if len(t.parts) == 1 && t.parts[0].path == nil {
		return t.parts[0].text, nil
	}
	var b strings.Builder
	for _, part := range t.parts {
		if part.path == nil {
			b.WriteString(part.text)
			continue
		}
		switch v := part.path.Eval(scope).(type) {
		case nil:
		case string:
			b.WriteString(v)
		default:
			s, err := compactJSON(v)
			if err != nil {
				return "", fmt.Errorf("render %s: %w", part.path.src, err)
			}
			b.WriteString(s)
		}
	}
	return b.String(), nil
}

// String returns the source.
func (t *Template) String() string { return t.src }

// Refs returns the canonical form of every reference the template reads, in order, without
// duplicates.
func (t *Template) Refs() []string {
	var refs []string
	seen := map[string]bool{}
	for _, part := range t.parts {
		if part.path != nil {
			refs = addRef(refs, seen, part.path.Canonical())
		}
	}
	return refs
}

// abbreviate shortens long sources in error messages.
func abbreviate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
