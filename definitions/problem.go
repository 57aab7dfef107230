package definitions

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a definition. Field is a dotted path from the document's
// root, with 0-based list indexes in brackets, such as steps[2].retry.max_attempts. A problem
// with no better place is at line 1; Line is 0 only for definitions that were not read from a
// file (Compile on a decoded workflow), and then File is empty too.
type Problem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// String formats the problem as file:line: field: message, leaving out the parts that are
// empty.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
		if p.Line > 0 {
			b.WriteString(strconv.Itoa(p.Line))
			b.WriteByte(':')
		}
		b.WriteByte(' ')
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems lists every problem found; it is the error returned by the loader, the parsers and
// Compile.
type Problems []Problem

// Error returns one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Err returns ps as an error, or nil when it is empty.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// sort orders problems by file, then line; problems on one line keep the order they were found.
func (ps Problems) sort() {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}

// reporter collects the problems of one document. lines maps field paths to the line they were
// read from; paths with a structural problem (a wrong type, say) are remembered in bad, so that
// the semantic checks that see the zero value do not report them a second time.
type reporter struct {
	file  string
	lines map[string]int
	bad   map[string]bool
	// badBelow holds the parents of the paths in bad.
	badBelow map[string]bool
	probs    Problems
}

func newReporter(file string) *reporter {
	return &reporter{file: file, lines: map[string]int{}, bad: map[string]bool{}, badBelow: map[string]bool{}}
}

// at reports a structural problem at a known line.
func (r *reporter) at(line int, field, format string, args ...any) {
	if r.file != "" && line < 1 {
		line = 1
	}
	r.bad[field] = true
	for p := field; p != ""; {
		p = parentPath(p)
		if r.badBelow[p] {
			break
		}
		r.badBelow[p] = true
	}
	r.probs = append(r.probs, Problem{File: r.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

// add reports a semantic problem of a field, at the line the field (or its nearest parent) was
// read from. It stays silent when the field, a parent or a child already has a structural
// problem: the value it sees is then not what the file says.
func (r *reporter) add(field, format string, args ...any) {
	for p := field; ; p = parentPath(p) {
		if r.bad[p] {
			return
		}
		if p == "" {
			break
		}
	}
	if r.badBelow[field] {
		return
	}
	r.probs = append(r.probs, Problem{File: r.file, Line: r.line(field), Field: field, Message: fmt.Sprintf(format, args...)})
}

// line returns the line of a field, or of its nearest parent that has one, or 1.
func (r *reporter) line(field string) int {
	if r.file == "" && len(r.lines) == 0 {
		return 0
	}
	for p := field; ; p = parentPath(p) {
		if l, ok := r.lines[p]; ok {
			return l
		}
		if p == "" {
			return 1
		}
	}
}

// parentPath strips the last segment of a field path: steps[2].retry -> steps[2] -> steps -> "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// join appends a key to a field path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a list index to a field path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
