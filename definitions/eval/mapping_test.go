package eval

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// decodeYAML decodes a mapping as the loader does.
func decodeYAML(t testing.TB, doc string) any {
	t.Helper()
	var v any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &v))
	return v
}

func TestMappingEval(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		name string
		yaml string
		want string // JSON
	}{
		{
			name: "references",
			yaml: `
blob_id: $.input.blob_id
metadata: $.steps.load_chapter.output.metadata
book_id: $.provider_id
execution_id: $.execution.id`,
			want: `{"blob_id": "b-1", "metadata": {"chapter_number": 7}, "book_id": "book:my-novel", "execution_id": "ex-1"}`,
		},
		{
			name: "literals of every type",
			yaml: `
model: gpt-4
temperature: 0.7
max_tokens: 3000
stream: false
nothing: null
price: $5 off
dollar_word: $USD
spaced: " $.input.n"`,
			want: `{"model": "gpt-4", "temperature": 0.7, "max_tokens": 3000, "stream": false, "nothing": null,
			        "price": "$5 off", "dollar_word": "$USD", "spaced": " $.input.n"}`,
		},
		{
			name: "templates",
			yaml: `
prompt: |
  Expand the following chapter content:

  {$.steps.load_chapter.output.content}
label: "chapter {$.steps.load_chapter.output.metadata.chapter_number} of {$.input.blob_id}"
escaped: "{{$.input.n}"`,
			want: `{"prompt": "Expand the following chapter content:\n\nOnce upon a time\n",
			        "label": "chapter 7 of b-1", "escaped": "{$.input.n}"}`,
		},
		{
			name: "nested maps and lists",
			yaml: `
parent_id: $.input.blob_id
metadata:
  type: expanded_chapter
  original_id: $.input.blob_id
  score: $.steps.validate_blob.output.score
  nested:
    deeper: [$.input.n, 1, "x", {k: $.vars.lang}, ["$.input.tags[0]", $.input.flag]]
list: [$.input.tags, []]
empty: {}`,
			want: `{"parent_id": "b-1", "metadata": {"type": "expanded_chapter", "original_id": "b-1", "score": 0.9,
			        "nested": {"deeper": [3, 1, "x", {"k": "en"}, ["a", true]]}}, "list": [["a", "b", "c"], []], "empty": {}}`,
		},
		{
			name: "missing references are null",
			yaml: `
a: $.steps.skipped.output.text
b: ["$.input.tags[9]"]
c: "[{$.input.absent}]"`,
			want: `{"a": null, "b": [null], "c": "[]"}`,
		},
		{
			name: "whole scope root",
			yaml: `
everything: $.vars
root: $`,
			want: `{"everything": {"lang": "en"}, "root": ` + scopeJSON + `}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CompileMapping(decodeYAML(t, tt.yaml))
			require.NoError(t, err)
			got, err := m.Eval(scope)
			require.NoError(t, err)
			assert.Equal(t, decode(t, tt.want), got)
			// The result round-trips through encoding/json unchanged.
			b, err := json.Marshal(got)
			require.NoError(t, err)
			assert.Equal(t, decode(t, string(b)), got)
		})
	}
}

// A step's output_map reads the HTTP response body.
func TestMappingEvalOverResponseBody(t *testing.T) {
	body := decode(t, `{"id": "new-1", "deltas": [{"op": "add"}], "content": "text"}`)
	m, err := CompileMapping(map[string]any{"new_blob_id": "$.id", "deltas": "$.deltas", "content": "$.content", "missing": "$.created_blobs"})
	require.NoError(t, err)
	got, err := m.Eval(body)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"new_blob_id": "new-1", "deltas": []any{map[string]any{"op": "add"}}, "content": "text", "missing": nil}, got)
}

func TestMappingRoots(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		name string
		tree any
		want any
	}{
		{"string reference", "$.input.n", 3.0},
		{"list", []any{"$.input.blob_id", 2}, []any{"b-1", 2.0}},
		{"nil", nil, nil},
		{"nil typed map", map[string]any(nil), map[string]any{}},
		{"literal", 5, 5.0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CompileMapping(tt.tree)
			require.NoError(t, err)
			got, err := m.Eval(scope)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// Literals from YAML or Go come out as the types encoding/json produces.
func TestMappingNormalisesLiterals(t *testing.T) {
	when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tree := map[string]any{
		"int": 1, "int8": int8(-2), "int64": int64(1 << 40), "uint64": uint64(7), "float32": float32(0.5),
		"number": json.Number("12.5"), "time": when, "yaml_map": map[any]any{"k": 1},
		"typed_list": []int{1, 2}, "typed_map": map[string]string{"ref": "$.input.blob_id"},
	}
	m, err := CompileMapping(tree)
	require.NoError(t, err)
	got, err := m.Eval(decode(t, scopeJSON))
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"int": 1.0, "int8": -2.0, "int64": float64(1 << 40), "uint64": 7.0, "float32": 0.5,
		"number": 12.5, "time": "2024-01-02T03:04:05Z", "yaml_map": map[string]any{"k": 1.0},
		"typed_list": []any{1.0, 2.0}, "typed_map": map[string]any{"ref": "b-1"},
	}, got)
}

// Mutating what Eval returns never reaches the scope, nor the next result.
func TestMappingEvalReturnsFreshData(t *testing.T) {
	scope := decode(t, scopeJSON)
	before := decode(t, scopeJSON)
	m, err := CompileMapping(map[string]any{"meta": "$.input.meta", "tags": "$.input.tags", "all": "$", "lit": []any{"x"}})
	require.NoError(t, err)
	got, err := m.Eval(scope)
	require.NoError(t, err)

	out := got.(map[string]any)
	out["meta"].(map[string]any)["type"] = "changed"
	out["tags"].([]any)[0] = "changed"
	out["all"].(map[string]any)["input"] = nil
	out["lit"].([]any)[0] = "changed"
	assert.Equal(t, before, scope)

	again, err := m.Eval(scope)
	require.NoError(t, err)
	assert.Equal(t, []any{"x"}, again.(map[string]any)["lit"])
}

func TestCompileMappingErrors(t *testing.T) {
	deep := any("$.input.n")
	for range MaxMappingDepth + 1 {
		deep = map[string]any{"k": deep}
	}
	deepList := any(1)
	for range MaxMappingDepth + 1 {
		deepList = []any{deepList}
	}
	tests := []struct {
		name string
		tree any
		err  string
	}{
		{"bad reference", map[string]any{"a": map[string]any{"b": "$.input["}}, "a.b: compile path"},
		{"non-singular reference", map[string]any{"a": []any{"ok", "$.input.tags[*]"}}, "a[1]: compile path"},
		{"bad template", map[string]any{"p": "hello {$.input.name"}, "p: compile template"},
		{"non-string key", map[any]any{1: "x"}, "key 1 is a int"},
		{"NaN", map[string]any{"x": nanValue()}, "not valid JSON"},
		{"not JSON", map[string]any{"f": func() {}}, "not JSON"},
		{"too deep map", deep, "nested deeper than"},
		{"too deep list", deepList, "nested deeper than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileMapping(tt.tree)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
			assert.True(t, strings.HasPrefix(err.Error(), "compile mapping: "), err.Error())
		})
	}
}

func TestMappingRefs(t *testing.T) {
	m, err := CompileMapping(decodeYAML(t, `
prompt: "{$.steps.load.output.content} by {$.input.author}"
chapter: $.steps.load.output.metadata.chapter_number
again: $['steps']['load'].output.content
check: [$.steps.check.output.score, literal, 3]
id: $.execution.id`))
	require.NoError(t, err)
	// Keys are walked in sorted order: again, chapter, check, id, prompt.
	assert.Equal(t, []string{
		"$.steps.load.output.content",
		"$.steps.load.output.metadata.chapter_number",
		"$.steps.check.output.score",
		"$.execution.id",
		"$.input.author",
	}, m.Refs())
	assert.Equal(t, []string{"load", "check"}, StepRefs(m.Refs()))

	lit, err := CompileMapping(map[string]any{"a": "x", "b": 1})
	require.NoError(t, err)
	assert.Empty(t, lit.Refs())
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}
