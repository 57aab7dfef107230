package eval

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Mapping is a compiled input_map or output_map: nested maps and lists whose strings are
// references ("$.x"), templates ("... {$.x} ...") or literals.
//
// A string is
//   - a reference when it is "$" or starts with "$." or "$[": it must then be a singular
//     JSONPath, and evaluates to a copy of the value there (null when missing);
//   - a template when it contains "{$" (see Template), and evaluates to a string;
//   - a literal otherwise ("gpt-4", "$5 off").
//
// Numbers, booleans and null are literals; integers decoded from YAML become float64, so that
// a result compares equal to its own encoding/json round trip. Map keys are literal.
type Mapping struct {
	root mappingNode
	refs []string
}

type mappingKind int

const (
	literalNode mappingKind = iota
	refNode
	templateNode
	objectNode
	listNode
)

type mappingNode struct {
	kind     mappingKind
	literal  any // a string, float64, bool or nil
	path     *Path
	template *Template
	keys     []string // sorted, for deterministic Refs and errors
	fields   map[string]mappingNode
	items    []mappingNode
}

// CompileMapping compiles a map or list tree. It accepts what encoding/json and yaml.v3 decode
// (map[string]any, map[any]any with string keys, []any, strings, any integer or float type,
// bools, nil), nested at most MaxMappingDepth levels.
func CompileMapping(tree any) (*Mapping, error) {
	c := mappingCompiler{seen: map[string]bool{}}
	root, err := c.compile(tree, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("compile mapping: %w", err)
	}
	return &Mapping{root: root, refs: c.refs}, nil
}

type mappingCompiler struct {
	refs []string
	seen map[string]bool
}

// compile compiles v found at loc, the keys and indexes leading to it.
func (c *mappingCompiler) compile(v any, loc []string, depth int) (mappingNode, error) {
	if depth > MaxMappingDepth {
		return mappingNode{}, fmt.Errorf("%s: nested deeper than %d levels", location(loc), MaxMappingDepth)
	}
	switch x := v.(type) {
	case string:
		return c.compileString(x, loc)
	case map[string]any:
		return c.compileObject(len(x), func(yield func(string, any) bool) {
			for k, e := range x {
				if !yield(k, e) {
					return
				}
			}
		}, loc, depth)
	case map[any]any:
		for k := range x {
			if _, ok := k.(string); !ok {
				return mappingNode{}, fmt.Errorf("%s: key %v is a %T, not a string", location(loc), k, k)
			}
		}
		return c.compileObject(len(x), func(yield func(string, any) bool) {
			for k, e := range x {
				if !yield(k.(string), e) {
					return
				}
			}
		}, loc, depth)
	case []any:
		n := mappingNode{kind: listNode, items: make([]mappingNode, len(x))}
		for i, e := range x {
			item, err := c.compile(e, append(loc, fmt.Sprintf("[%d]", i)), depth+1)
			if err != nil {
				return mappingNode{}, err
			}
			n.items[i] = item
		}
		return n, nil
	}
	lit, err := normalize(v, MaxMappingDepth-depth)
	if err != nil {
		return mappingNode{}, fmt.Errorf("%s: %w", location(loc), err)
	}
	if _, composite := lit.(map[string]any); composite {
		return c.compile(lit, loc, depth)
	}
	if _, composite := lit.([]any); composite {
		return c.compile(lit, loc, depth)
	}
	return mappingNode{kind: literalNode, literal: lit}, nil
}

func (c *mappingCompiler) compileObject(size int, entries func(func(string, any) bool), loc []string, depth int) (mappingNode, error) {
	n := mappingNode{kind: objectNode, fields: make(map[string]mappingNode, size), keys: make([]string, 0, size)}
	all := make(map[string]any, size)
	for k, e := range entries {
		all[k] = e
		n.keys = append(n.keys, k)
	}
	sort.Strings(n.keys)
	for _, k := range n.keys {
		field, err := c.compile(all[k], append(loc, "."+k), depth+1)
		if err != nil {
			return mappingNode{}, err
		}
		n.fields[k] = field
	}
	return n, nil
}

func (c *mappingCompiler) compileString(s string, loc []string) (mappingNode, error) {
	switch {
	case isReference(s):
		p, err := CompilePath(s)
		if err != nil {
			return mappingNode{}, fmt.Errorf("%s: %w", location(loc), err)
		}
		c.refs = addRef(c.refs, c.seen, p.Canonical())
		return mappingNode{kind: refNode, path: p}, nil
	case strings.Contains(s, "{$"):
		t, err := CompileTemplate(s)
		if err != nil {
			return mappingNode{}, fmt.Errorf("%s: %w", location(loc), err)
		}
		for _, r := range t.Refs() {
			c.refs = addRef(c.refs, c.seen, r)
		}
		return mappingNode{kind: templateNode, template: t}, nil
	}
	return mappingNode{kind: literalNode, literal: s}, nil
}

// isReference reports whether a mapping string is meant as a JSONPath reference.
func isReference(s string) bool {
	return s == "$" || strings.HasPrefix(s, "$.") || strings.HasPrefix(s, "$[")
}

// location renders the position of a mapping value for error messages, such as
// "metadata.tags[2]".
func location(loc []string) string {
	if len(loc) == 0 {
		return "mapping root"
	}
	return strings.TrimPrefix(strings.Join(loc, ""), ".")
}

// Eval resolves the mapping over the scope and returns fresh JSON data: mutating the result
// never changes the scope.
func (m *Mapping) Eval(scope any) (any, error) {
	return m.root.eval(scope)
}

func (n *mappingNode) eval(scope any) (any, error) {
	switch n.kind {
	case refNode:
		v, err := deepCopy(n.path.Eval(scope))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.path.src, err)
		}
		return v, nil
	case templateNode:
		return n.template.Render(scope)
	case objectNode:
		out := make(map[string]any, len(n.keys))
		for _, k := range n.keys {
			f := n.fields[k]
			v, err := f.eval(scope)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = v
		}
		return out, nil
	case listNode:
		out := make([]any, len(n.items))
		for i := range n.items {
			v, err := n.items[i].eval(scope)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = v
		}
		return out, nil
	}
	return n.literal, nil
}

// Refs returns every reference the mapping, template or condition reads, such as
// "$.steps.load.output.content", for load-time checks. They are in canonical form (see
// Path.Canonical), without duplicates, in the order of a walk over the mapping with object keys
// sorted.
func (m *Mapping) Refs() []string { return slices.Clone(m.refs) }
