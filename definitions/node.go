package definitions

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Guards against hostile documents. A definition is small; anything near these limits is a
// mistake or an attack.
const (
	// MaxFileSize is the largest definition file or body read, in bytes.
	MaxFileSize = 1 << 20
	// MaxDepth is the deepest nesting of mappings and lists in a definition.
	MaxDepth = 64
	// MaxNodes bounds the nodes visited while decoding one document, aliases expanded. It stops
	// alias bombs ("billion laughs"), which are tiny on disk and huge once expanded.
	MaxNodes = 200_000
	// maxPathBytes bounds the summed length of the field paths of the visited nodes, which
	// long keys repeated through aliases would otherwise make huge.
	maxPathBytes = 32 << 20
)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument parses one YAML or JSON document into its root node. Problems go to r; the
// result is nil when there is nothing to decode.
func parseDocument(r *reporter, data []byte) *yaml.Node {
	if len(data) > MaxFileSize {
		r.at(1, "", "file is %d bytes, larger than the limit of %d", len(data), MaxFileSize)
		return nil
	}
	if strings.HasSuffix(strings.ToLower(r.file), ".json") {
		// JSON is YAML to the parser below, but a broken .json file deserves a JSON error.
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			reportJSONError(r, data, err)
			return nil
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			r.at(1, "", "the document is empty")
			return nil
		}
		reportYAMLError(r, data, err)
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		reportYAMLError(r, data, err)
		return nil
	default:
		r.at(extra.Line, "", "a file holds one definition; found a second YAML document")
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		r.at(1, "", "the document is empty")
		return nil
	}
	return doc.Content[0]
}

// reportYAMLError reports a syntax error at the line where the document breaks. yaml.v3 names
// the line where the enclosing block or flow began (the parser's context mark, 0-based for
// parser errors), not the line of the bad token: a bad indentation on line 22 of a step that
// starts on line 11 says "line 10". So the line is found again: the first line from the one
// named on such that the document cut after it fails with the same message.
func reportYAMLError(r *reporter, data []byte, err error) {
	msg, line := trimYAMLPrefix(err.Error()), 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		line = breakingLine(data, max(line, 1), msg)
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = trimYAMLPrefix(te.Errors[0])
	}
	r.at(line, "", "invalid YAML: %s", msg)
}

// breakingLine returns the first line n >= from such that the first n lines of data fail to
// parse with message msg, or from when there is none. It bisects, in O(log lines) parses.
// Prefixes fail in order as a rule: once the construct that breaks is cut in, every longer
// prefix holds it. (A multi-line quoted scalar or flow collection cut in the middle fails with
// another message, "unexpected end of stream", and so does not match.)
func breakingLine(data []byte, from int, msg string) int {
	ends := []int{} // ends[i] is the offset after line i+1
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	fails := func(n int) bool {
		err := parseAll(data[:ends[n-1]])
		if err == nil {
			return false
		}
		m := yamlLine.FindStringSubmatch(err.Error())
		return m != nil && m[2] == msg
	}
	lo, hi := from, len(ends)
	if lo > hi || !fails(hi) {
		return from
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// parseAll parses every YAML document of data and returns the first error.
func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// reportJSONError reports why a .json file is not JSON, at its line and column: encoding/json
// gives a byte offset.
func reportJSONError(r *reporter, data []byte, err error) {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		r.at(1, "", "invalid JSON: %v", err)
		return
	}
	// Offset counts the bytes read, the bad one included; at the end of the input there is
	// no bad byte, and the place is just after the last one.
	off := int(min(max(se.Offset-1, 0), int64(len(data))))
	if se.Offset >= int64(len(data)) && strings.Contains(se.Error(), "unexpected end") {
		off = len(data)
	}
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	r.at(line, "", "invalid JSON: line %d, column %d: %v", line, col, err)
}

func trimYAMLPrefix(s string) string {
	if len(s) > 6 && s[:6] == "yaml: " {
		return s[6:]
	}
	return s
}

// decoder walks yaml nodes into Go values, reporting every problem it meets. It counts the
// nodes it visits, aliases expanded, and stops decoding once MaxNodes is exceeded.
type decoder struct {
	*reporter
	visited   int
	pathBytes int
	exhausted bool
}

// enter resolves aliases and accounts for one node. It returns nil when the budget is spent
// or the node is nested too deep; the problem is then already reported.
func (d *decoder) enter(n *yaml.Node, path string, depth int) *yaml.Node {
	if d.exhausted || n == nil {
		return nil
	}
	for hops := 0; n.Kind == yaml.AliasNode; hops++ {
		if n.Alias == nil || hops > MaxDepth {
			d.at(n.Line, path, "unresolvable YAML alias")
			return nil
		}
		n = n.Alias
	}
	d.visited++
	d.pathBytes += len(path)
	if d.visited > MaxNodes || d.pathBytes > maxPathBytes {
		d.exhausted = true
		if d.visited > MaxNodes {
			d.at(n.Line, path, "the document expands to more than %d nodes (YAML alias bomb?)", MaxNodes)
		} else {
			d.at(n.Line, path, "the document expands to more than %d MiB of field paths (YAML alias bomb?)", maxPathBytes>>20)
		}
		return nil
	}
	if depth > MaxDepth {
		d.at(n.Line, path, "nested deeper than %d levels", MaxDepth)
		return nil
	}
	// The document itself has no line: a problem with no better place goes at line 1.
	if _, seen := d.lines[path]; !seen && path != "" {
		d.lines[path] = n.Line
	}
	return n
}

// wrong reports a value of the wrong type, at the line of its key when there is one.
func (d *decoder) wrong(n *yaml.Node, path, format string, args ...any) {
	line, ok := d.lines[path]
	if !ok {
		line = n.Line
	}
	d.at(line, path, format, args...)
}

// fields checks that n is a mapping whose keys are all known and unique, and returns the value
// node of each key, aliases unresolved. Unknown keys are reported at their own line.
func (d *decoder) fields(n *yaml.Node, path string, known ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		d.wrong(n, path, "must be a mapping, not %s", describe(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name, ok := d.key(k, path)
		if !ok {
			continue
		}
		fp := join(path, name)
		if _, dup := out[name]; dup {
			d.at(k.Line, fp, "duplicate key")
			continue
		}
		if !slices.Contains(known, name) {
			if guess := closest(name, known); guess != "" {
				d.at(k.Line, fp, "unknown field (did you mean %s?)", guess)
			} else {
				d.at(k.Line, fp, "unknown field")
			}
			continue
		}
		d.lines[fp] = k.Line
		out[name] = v
	}
	return out
}

// closest returns the known field that name is most likely a misspelling of: the nearest,
// ignoring case, within an edit distance of 2 (1 for names of up to 4 bytes), or else the one
// sharing the longest prefix of 4 bytes or more (timeout, retries). It returns "" when none is
// close.
func closest(name string, known []string) string {
	lower := strings.ToLower(name)
	limit := 3
	if len(name) <= 4 {
		limit = 2
	}
	best, bestDist := "", limit
	for _, k := range known {
		if d := editDistance(lower, k, bestDist); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return best
	}
	bestPrefix := 3
	for _, k := range known {
		n := 0
		for n < len(lower) && n < len(k) && lower[n] == k[n] {
			n++
		}
		if n > bestPrefix {
			best, bestPrefix = k, n
		}
	}
	return best
}

// editDistance is the edit distance of a and b in bytes (insertions, deletions, substitutions
// and swaps of neighbours: tpye is 1 from type), or limit when it is limit or more.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	// Three rows of the optimal string alignment table.
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}

// key returns the string of a mapping key.
func (d *decoder) key(k *yaml.Node, path string) (string, bool) {
	for hops := 0; k.Kind == yaml.AliasNode && k.Alias != nil && hops < MaxDepth; hops++ {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		d.at(k.Line, path, "a mapping key must be a string, not %s", describe(k))
		return "", false
	}
	if k.Tag == "!!merge" {
		d.at(k.Line, join(path, k.Value), "YAML merge keys (<<) are not supported")
		return "", false
	}
	return k.Value, true
}

// describe names the kind of a node for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a " + n.Tag + " value"
	}
	return "an unknown node"
}

func (d *decoder) str(n *yaml.Node, path string, depth int) string {
	if n = d.enter(n, path, depth); n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			hint = " (quote it: \"" + n.Value + "\")"
		}
		d.wrong(n, path, "must be a string, not %s%s", describe(n), hint)
		return ""
	}
	return n.Value
}

func (d *decoder) integer(n *yaml.Node, path string, depth int) int {
	if n = d.enter(n, path, depth); n == nil {
		return 0
	}
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") {
		var f float64
		if err := n.Decode(&f); err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			return int(f)
		}
		d.at(n.Line, path, "must be a whole number of reasonable size, not %s", n.Value)
		return 0
	}
	d.wrong(n, path, "must be a whole number, not %s", describe(n))
	return 0
}

func (d *decoder) float(n *yaml.Node, path string, depth int) float64 {
	if n = d.enter(n, path, depth); n == nil {
		return 0
	}
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") {
		var f float64
		if err := n.Decode(&f); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f
		}
		d.at(n.Line, path, "must be a finite number, not %s", n.Value)
		return 0
	}
	d.wrong(n, path, "must be a number, not %s", describe(n))
	return 0
}

func (d *decoder) boolean(n *yaml.Node, path string, depth int) bool {
	if n = d.enter(n, path, depth); n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b
		}
	}
	d.wrong(n, path, "must be true or false, not %s", describe(n))
	return false
}

// list checks that n is a list and calls each for every item with its path.
func (d *decoder) list(n *yaml.Node, path string, depth int, each func(item *yaml.Node, path string)) {
	if n = d.enter(n, path, depth); n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.wrong(n, path, "must be a list, not %s", describe(n))
		return
	}
	for i, item := range n.Content {
		each(item, index(path, i))
	}
}

func (d *decoder) strings(n *yaml.Node, path string, depth int) []string {
	out := []string{}
	d.list(n, path, depth, func(item *yaml.Node, p string) {
		out = append(out, d.str(item, p, depth+1))
	})
	return out
}

// object decodes a mapping into a map of JSON values (see value).
func (d *decoder) object(n *yaml.Node, path string, depth int) map[string]any {
	if n = d.enter(n, path, depth); n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.wrong(n, path, "must be a mapping, not %s", describe(n))
		return nil
	}
	v, _ := d.convert(n, path, depth).(map[string]any)
	return v
}

// value decodes any node into JSON data: map[string]any, []any, string, float64, bool or nil.
// Numbers are float64, as encoding/json decodes them, so that a definition read from YAML and
// the same definition read back from its JSON behave alike.
func (d *decoder) value(n *yaml.Node, path string, depth int) any {
	if n = d.enter(n, path, depth); n == nil {
		return nil
	}
	return d.convert(n, path, depth)
}

// convert is value for a node already entered.
func (d *decoder) convert(n *yaml.Node, path string, depth int) any {
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			name, ok := d.key(k, path)
			if !ok {
				continue
			}
			fp := join(path, name)
			if _, dup := m[name]; dup {
				d.at(k.Line, fp, "duplicate key")
				continue
			}
			d.lines[fp] = k.Line
			m[name] = d.value(v, fp, depth+1)
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			l = append(l, d.value(item, index(path, i), depth+1))
		}
		return l
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			var b bool
			if n.Decode(&b) == nil {
				return b
			}
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
			d.at(n.Line, path, "%s is not a finite JSON number", n.Value)
			return nil
		case "!!str", "!!timestamp":
			return n.Value
		}
		d.at(n.Line, path, "unsupported YAML tag %s", n.Tag)
		return nil
	}
	d.at(n.Line, path, "unsupported YAML node")
	return nil
}
