package definitions

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A syntax error is reported at the line that breaks the document, not at the line where the
// block around it began (yaml.v3's own answer).
func TestYAMLSyntaxErrorLine(t *testing.T) {
	var doc strings.Builder
	doc.WriteString("id: wf\nname: A workflow\ndescription: with a long step\ntimeout_seconds: 60\n")
	doc.WriteString("# padding\n# padding\n# padding\n# padding\n# padding\n")
	doc.WriteString("steps:\n")                                                                                             // line 10
	doc.WriteString("  - id: a\n    type: api_call\n    service: s\n")                                                      // 11-13
	doc.WriteString("    endpoint: /a\n    method: POST\n    input_map:\n")                                                 // 14-16
	doc.WriteString("      a: $.input.a\n      b: $.input.b\n      c: $.input.c\n      d: $.input.d\n      e: $.input.e\n") // 17-21
	doc.WriteString("     f: $.input.f\n")                                                                                  // 22: one space short
	doc.WriteString("    timeout_seconds: 5\n")

	tests := []struct{ name, doc, want string }{
		{"bad indentation deep in a step", doc.String(), "w.yaml:22: invalid YAML: did not find expected key"},
		{"a stray line", "id: x\nsteps:\n  - id: a\n    type: transform\n  oops\n", "w.yaml:5: invalid YAML: could not find expected ':'"},
		{"mapping value in a plain scalar", "id: x\nsteps:\n  - id: a\n    service: s: t\n", "w.yaml:4: invalid YAML: mapping values are not allowed in this context"},
		{"a tab", "id: x\nsteps:\n  - id: a\n    type: transform\n\tx: 1\n", "w.yaml:5: invalid YAML: found a tab character"},
		{"an unclosed quote is where it opens", "id: x\nname: ok\nsteps:\n  - id: \"a\n    type: transform\n", "w.yaml:4: invalid YAML: found unexpected end of stream"},
		{"on line 1", "id: [x\n", "w.yaml:1: invalid YAML:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("w.yaml", []byte(tt.doc), KindWorkflow)
			got := problemLines(t, err)
			require.Len(t, got, 1, got)
			assert.True(t, strings.HasPrefix(got[0], tt.want), "got  %s\nwant %s...", got[0], tt.want)
		})
	}
}

// A .json file that is not JSON says so, at the line and column encoding/json names.
func TestInvalidJSONFile(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"missing comma", "{\n  \"id\": \"wf\"\n  \"steps\": []\n}\n", `w.json:3: invalid JSON: line 3, column 3: invalid character '"' after object key:value pair`},
		{"trailing comma", "{\n  \"id\": \"wf\",\n  \"steps\": [],\n}\n", `w.json:4: invalid JSON: line 4, column 1: invalid character '}'`},
		{"cut short", "{\n  \"id\": \"wf\",\n  \"steps\": [\n", "w.json:4: invalid JSON: line 4, column 1: unexpected end of JSON input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("w.json", []byte(tt.doc), KindWorkflow)
			got := problemLines(t, err)
			require.Len(t, got, 1, got)
			assert.True(t, strings.HasPrefix(got[0], tt.want), "got  %s\nwant %s...", got[0], tt.want)
			assert.NotContains(t, got[0], "YAML")
		})
	}
	// A .yaml file in JSON syntax is YAML: its errors stay YAML errors.
	_, err := Parse("w.yaml", []byte("{\"id\": \"wf\" \"steps\": []}"), KindWorkflow)
	assert.Contains(t, problemLines(t, err)[0], "invalid YAML")
}

func TestUnknownFieldSuggestsTheClosest(t *testing.T) {
	doc := `id: wf
steps:
  - id: a
    type: api_call
    service: s
    endpoint: /a
    timout_seconds: 5
    retyr: {max_attempts: 2}
    timeout: 3
    colour: red
naem: x
`
	_, err := Parse("w.yaml", []byte(doc), KindWorkflow)
	assert.Equal(t, []string{
		"w.yaml:7: steps[0].timout_seconds: unknown field (did you mean timeout_seconds?)",
		"w.yaml:8: steps[0].retyr: unknown field (did you mean retry?)",
		"w.yaml:9: steps[0].timeout: unknown field (did you mean timeout_seconds?)",
		"w.yaml:10: steps[0].colour: unknown field",
		"w.yaml:11: naem: unknown field (did you mean name?)",
	}, problemLines(t, err))
}

func TestClosest(t *testing.T) {
	known := []string{"id", "name", "type", "timeout_seconds", "retry"}
	for name, want := range map[string]string{
		"nam": "name", "tpye": "type", "ID": "id", "ab": "", "timeouts": "timeout_seconds", "xyz": "", "timeout_secs": "timeout_seconds",
		"retries": "retry", "zzzzzzzz": "",
	} {
		assert.Equal(t, want, closest(name, known), name)
	}
}
