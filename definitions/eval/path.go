package eval

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/theory/jsonpath"
	"github.com/theory/jsonpath/spec"
)

// Path is a compiled JSONPath reference such as $.steps.load.output.content.
//
// Only singular queries are accepted: a chain of name and index selectors that addresses at
// most one value ($.a.b, $['a b'], $.list[0], $.list[-1]). Wildcards, slices, filters and
// descendant segments (..) are rejected, because a reference yields one value, not a list.
type Path struct {
	src string
	// sel holds one name (spec.Name) or index (spec.Index) selector per segment.
	sel []spec.Selector
}

// CompilePath compiles a JSONPath reference. It must be a singular query starting at $.
func CompilePath(src string) (*Path, error) {
	p, err := compilePath(src)
	if err != nil {
		return nil, fmt.Errorf("compile path %q: %w", src, err)
	}
	return p, nil
}

func compilePath(src string) (*Path, error) {
	if len(src) > MaxSourceLen {
		return nil, fmt.Errorf("longer than %d bytes", MaxSourceLen)
	}
	if !strings.HasPrefix(src, "$") {
		return nil, errors.New("a reference must start with $")
	}
	jp, err := jsonpath.Parse(src)
	if err != nil {
		return nil, err
	}
	segs := jp.Query().Segments()
	sel := make([]spec.Selector, 0, len(segs))
	for _, seg := range segs {
		ss := seg.Selectors()
		if seg.IsDescendant() || len(ss) != 1 {
			return nil, fmt.Errorf("not a singular query: segment %s selects many values; use only names and indexes", seg)
		}
		switch s := ss[0].(type) {
		case spec.Name, spec.Index:
			sel = append(sel, s)
		default:
			return nil, fmt.Errorf("not a singular query: selector %s selects many values; use only names and indexes", s)
		}
	}
	return &Path{src: src, sel: sel}, nil
}

// Eval returns the value at the path, or nil when the path does not exist. The value is shared
// with scope, not copied: do not modify it.
func (p *Path) Eval(scope any) any {
	return lookup(scope, p.sel)
}

func lookup(v any, sel []spec.Selector) any {
	for _, s := range sel {
		var found bool
		switch s := s.(type) {
		case spec.Name:
			v, found = lookupName(v, string(s))
		case spec.Index:
			v, found = lookupIndex(v, int64(s))
		}
		if !found {
			return nil
		}
	}
	return v
}

// lookupName reads a key of a JSON object; anything but an object has no keys.
func lookupName(v any, name string) (any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	e, ok := m[name]
	return e, ok
}

// lookupIndex reads an element of a JSON array; a negative index counts from the end.
func lookupIndex(v any, i int64) (any, bool) {
	l, ok := v.([]any)
	if !ok {
		return nil, false
	}
	if i < 0 {
		i += int64(len(l))
	}
	if i < 0 || i >= int64(len(l)) {
		return nil, false
	}
	return l[i], true
}

// String returns the source.
func (p *Path) String() string { return p.src }

// Canonical returns the path in the form Refs uses: member names in dot notation where they are
// identifiers ($.steps.load.output), bracket notation otherwise ($['a b'][0]).
func (p *Path) Canonical() string { return canonical(p.sel) }

// Refs returns the path's canonical form, for symmetry with the other compiled values.
func (p *Path) Refs() []string { return []string{p.Canonical()} }

func canonical(sel []spec.Selector) string {
	var b strings.Builder
	b.WriteByte('$')
	for _, s := range sel {
		switch s := s.(type) {
		case spec.Name:
			if isShorthandName(string(s)) {
				b.WriteByte('.')
				b.WriteString(string(s))
			} else {
				// A one-element normalized path renders the name as ['...'] with RFC 9535
				// escaping; drop its leading $.
				b.WriteString(spec.NormalizedPath{s}.String()[1:])
			}
		case spec.Index:
			b.WriteByte('[')
			b.WriteString(strconv.FormatInt(int64(s), 10))
			b.WriteByte(']')
		}
	}
	return b.String()
}

// isShorthandName reports whether name can be written as .name: ASCII letters, digits and
// underscores, not starting with a digit. (RFC 9535 allows more; canonical output stays
// conservative.)
func isShorthandName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// StepRefs returns the ids of the steps that refs read through $.steps.<id>, in order of first
// appearance and without duplicates. Refs that are not step references are ignored.
func StepRefs(refs []string) []string {
	var ids []string
	seen := map[string]bool{}
	for _, r := range refs {
		id, ok := StepRef(r)
		if ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// StepRef returns the step id of a reference of the form $.steps.<id>…, and false for any other
// reference (including a bare $.steps).
func StepRef(ref string) (string, bool) {
	p, err := compilePath(ref)
	if err != nil || len(p.sel) < 2 {
		return "", false
	}
	if root, ok := p.sel[0].(spec.Name); !ok || root != "steps" {
		return "", false
	}
	id, ok := p.sel[1].(spec.Name)
	return string(id), ok
}

// addRef appends ref to refs unless it is already there.
func addRef(refs []string, seen map[string]bool, ref string) []string {
	if seen[ref] {
		return refs
	}
	seen[ref] = true
	return append(refs, ref)
}
