package eval

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// PathTemplate is an endpoint path such as /blobs/{blob_id}; each {name} is filled from the
// step's resolved input and URL-path-escaped.
//
// An endpoint is a path on the service's base URL, never a URL of its own: it starts with a
// single "/", has no scheme or host, no "." or ".." segment (also when percent-encoded), no
// query string or fragment ("?" and "#" are rejected: pass data in the input instead), and only
// characters that are valid in a URL path. A parameter name is a letter or underscore followed by
// letters, digits and underscores; a parameter may fill a whole segment or part of one
// (/v{version}/items). The same name may appear more than once.
type PathTemplate struct {
	src    string
	parts  []pathPart
	params []string
}

// pathPart is literal path text, or a parameter when param is set.
type pathPart struct {
	text  string
	param string
}

// CompilePathTemplate compiles an endpoint. It rejects absolute URLs and ".." segments.
func CompilePathTemplate(src string) (*PathTemplate, error) {
	t, err := compilePathTemplate(src)
	if err != nil {
		return nil, fmt.Errorf("compile endpoint %q: %w", abbreviate(src), err)
	}
	return t, nil
}

func compilePathTemplate(src string) (*PathTemplate, error) {
	switch {
	case len(src) > MaxSourceLen:
		return nil, fmt.Errorf("longer than %d bytes", MaxSourceLen)
	case src == "":
		return nil, errors.New("empty endpoint")
	case strings.HasPrefix(src, "//"):
		return nil, errors.New(`an endpoint is a path, not a URL: it must not start with "//"`)
	case !strings.HasPrefix(src, "/"):
		if strings.Contains(src, "://") {
			return nil, errors.New(`an endpoint is a path on the service, not an absolute URL: it must start with "/"`)
		}
		return nil, errors.New(`an endpoint must start with "/"`)
	}
	t := &PathTemplate{src: src}
	seen := map[string]bool{}
	for i := 0; i < len(src); {
		switch c := src[i]; {
		case c == '{':
			j := strings.IndexByte(src[i:], '}')
			if j < 0 {
				return nil, fmt.Errorf(`at offset %d: unclosed "{"`, i)
			}
			name := src[i+1 : i+j]
			if !isParamName(name) {
				return nil, fmt.Errorf("at offset %d: bad parameter name %q: use letters, digits and underscores", i, name)
			}
			t.parts = append(t.parts, pathPart{param: name})
			if !seen[name] {
				seen[name] = true
				t.params = append(t.params, name)
			}
			i += j + 1
		case c == '}':
			return nil, fmt.Errorf(`at offset %d: "}" without "{"`, i)
		case c == '?' || c == '#':
			return nil, fmt.Errorf("at offset %d: query strings and fragments are not allowed in an endpoint", i)
		case c == '%':
			if i+2 >= len(src) || !isHex(src[i+1]) || !isHex(src[i+2]) {
				return nil, fmt.Errorf("at offset %d: bad percent-encoding", i)
			}
			t.appendText(src[i : i+3])
			i += 3
		case isPathChar(c):
			t.appendText(src[i : i+1])
			i++
		default:
			return nil, fmt.Errorf("at offset %d: character %q is not allowed in a URL path", i, c)
		}
	}
	// Dot segments are checked on the literal text alone, so a template like /a/{x}/../b fails
	// at load time; Expand checks the expanded path again.
	var lit strings.Builder
	for _, p := range t.parts {
		if p.param != "" {
			lit.WriteString("x")
		} else {
			lit.WriteString(p.text)
		}
	}
	if err := checkDotSegments(lit.String()); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *PathTemplate) appendText(s string) {
	if n := len(t.parts); n > 0 && t.parts[n-1].param == "" {
		t.parts[n-1].text += s
		return
	}
	t.parts = append(t.parts, pathPart{text: s})
}

// checkDotSegments rejects "." and ".." segments, percent-encoded or not, which would let the
// path climb out of the service's base URL once a client or proxy normalises it.
func checkDotSegments(path string) error {
	for _, seg := range strings.Split(path, "/") {
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return fmt.Errorf("segment %q: %w", seg, err)
		}
		if dec == "." || dec == ".." {
			return fmt.Errorf("dot segment %q is not allowed", seg)
		}
	}
	return nil
}

// Params returns the parameter names, in order of first appearance.
func (t *PathTemplate) Params() []string {
	return append([]string(nil), t.params...)
}

// String returns the source.
func (t *PathTemplate) String() string { return t.src }

// Expand fills the parameters from the resolved input object. Strings are used as they are,
// numbers in decimal without an exponent (3, 2.5, 1000000000000000000000), booleans as true or
// false, and each value is escaped with url.PathEscape. A missing, null or empty value, an
// object or a list is an error naming the parameter, and so is a value that would make a "." or
// ".." segment.
func (t *PathTemplate) Expand(input map[string]any) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.param == "" {
			b.WriteString(p.text)
			continue
		}
		v, ok := input[p.param]
		if !ok || v == nil {
			return "", fmt.Errorf("endpoint %s: parameter %q is missing from the input", t.src, p.param)
		}
		s, ok := scalarString(v)
		if !ok {
			return "", fmt.Errorf("endpoint %s: parameter %q is %s, not a string, number or boolean", t.src, p.param, withArticle(jsonTypeName(v)))
		}
		if s == "" {
			return "", fmt.Errorf("endpoint %s: parameter %q is empty", t.src, p.param)
		}
		b.WriteString(url.PathEscape(s))
	}
	out := b.String()
	if err := checkDotSegments(out); err != nil {
		return "", fmt.Errorf("endpoint %s: expanded path %q: %w", t.src, out, err)
	}
	return out, nil
}

func isParamName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// isPathChar reports whether c may appear unescaped in a URL path (RFC 3986 pchar and "/",
// without "%", which is checked apart).
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

// jsonTypeName names the JSON type of v for error messages.
func jsonTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

func withArticle(noun string) string {
	if noun != "" && strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}
