package eval

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decode turns a JSON document into scope data, as the engine gets it from the wire.
func decode(t testing.TB, doc string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(doc), &v))
	return v
}

const scopeJSON = `{
	"input": {"blob_id": "b-1", "n": 3, "ratio": 0.5, "flag": true, "tags": ["a", "b", "c"],
	          "meta": {"type": "chapter", "a b": 1, "k'q": 2}, "nothing": null, "empty": ""},
	"steps": {
		"validate_blob": {"status": "succeeded", "output": {"valid": true, "score": 0.9}},
		"load_chapter": {"status": "succeeded", "output": {"content": "Once upon a time", "metadata": {"chapter_number": 7}}}
	},
	"execution": {"id": "ex-1"},
	"provider_id": "book:my-novel",
	"workflow": {"id": "wf", "revision": 2},
	"vars": {"lang": "en"}
}`

func TestCompilePath(t *testing.T) {
	tests := []struct {
		src       string
		canonical string
		err       string
	}{
		{src: "$", canonical: "$"},
		{src: "$.input.blob_id", canonical: "$.input.blob_id"},
		{src: "$.steps.load.output.content", canonical: "$.steps.load.output.content"},
		{src: "$['input']['blob_id']", canonical: "$.input.blob_id"},
		{src: `$["input"].meta`, canonical: "$.input.meta"},
		{src: "$.input['a b']", canonical: "$.input['a b']"},
		{src: `$.input["k'q"]`, canonical: `$.input['k\'q']`},
		{src: "$.input.tags[0]", canonical: "$.input.tags[0]"},
		{src: "$.input.tags[-1]", canonical: "$.input.tags[-1]"},
		{src: "$.input['0abc']", canonical: "$.input['0abc']"},
		{src: "$.steps.load-chapter", err: "jsonpath"},
		{src: "", err: "must start with $"},
		{src: "input.blob_id", err: "must start with $"},
		{src: "@.input", err: "must start with $"},
		{src: " $.input", err: "must start with $"},
		{src: "$.input.tags[*]", err: "not a singular query"},
		{src: "$.input.*", err: "not a singular query"},
		{src: "$..blob_id", err: "not a singular query"},
		{src: "$.input.tags[0:2]", err: "not a singular query"},
		{src: "$.input.tags[0,1]", err: "not a singular query"},
		{src: "$.input.tags[?@ == 'a']", err: "not a singular query"},
		{src: "$.input[", err: "jsonpath"},
		{src: "$.input.", err: "jsonpath"},
		{src: "$.input.blob_id\n", err: "jsonpath"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := CompilePath(tt.src)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				assert.Contains(t, err.Error(), "compile path")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.src, p.String())
			assert.Equal(t, tt.canonical, p.Canonical())
			assert.Equal(t, []string{tt.canonical}, p.Refs())
			// The canonical form is a path of its own that means the same.
			again, err := CompilePath(p.Canonical())
			require.NoError(t, err)
			assert.Equal(t, p.Canonical(), again.Canonical())
		})
	}
}

func TestCompilePathTooLong(t *testing.T) {
	src := "$" + strings.Repeat(".a", MaxSourceLen/2+1)
	_, err := CompilePath(src)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "longer than")
}

func TestPathEval(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		src  string
		want any
	}{
		{"$.input.blob_id", "b-1"},
		{"$.input.n", 3.0},
		{"$.input.flag", true},
		{"$.input.tags", []any{"a", "b", "c"}},
		{"$.input.tags[1]", "b"},
		{"$.input.tags[-1]", "c"},
		{"$.input.meta", map[string]any{"type": "chapter", "a b": 1.0, "k'q": 2.0}},
		{"$.input.meta['a b']", 1.0},
		{"$.steps.validate_blob.status", "succeeded"},
		{"$.steps.load_chapter.output.metadata.chapter_number", 7.0},
		{"$.execution.id", "ex-1"},
		{"$.provider_id", "book:my-novel"},
		{"$.workflow.revision", 2.0},
		{"$.vars.lang", "en"},
		// Missing paths are null, however they are missing.
		{"$.input.nothing", nil},
		{"$.input.absent", nil},
		{"$.steps.missing.output.valid", nil},
		{"$.input.tags[3]", nil},
		{"$.input.tags[-4]", nil},
		{"$.input.blob_id.length", nil}, // a member of a string
		{"$.input.meta[0]", nil},        // an index of an object
		{"$.input.tags.a", nil},         // a name of a list
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := CompilePath(tt.src)
			require.NoError(t, err)
			assert.Equal(t, tt.want, p.Eval(scope))
		})
	}
	t.Run("whole scope", func(t *testing.T) {
		p, err := CompilePath("$")
		require.NoError(t, err)
		assert.Equal(t, scope, p.Eval(scope))
	})
	t.Run("nil scope", func(t *testing.T) {
		p, err := CompilePath("$.input.blob_id")
		require.NoError(t, err)
		assert.Nil(t, p.Eval(nil))
	})
}

// A step's output_map is evaluated over the HTTP response body: $ is the body.
func TestPathEvalOverResponseBody(t *testing.T) {
	body := decode(t, `{"content": "chapter text", "metadata": {"chapter_number": 3}, "deltas": [{"op": "add"}]}`)
	tests := []struct {
		src  string
		want any
	}{
		{"$.content", "chapter text"},
		{"$.metadata.chapter_number", 3.0},
		{"$.deltas[0].op", "add"},
		{"$.created_blobs", nil},
	}
	for _, tt := range tests {
		p, err := CompilePath(tt.src)
		require.NoError(t, err)
		assert.Equal(t, tt.want, p.Eval(body), tt.src)
	}
}

func TestStepRefs(t *testing.T) {
	refs := []string{
		"$.input.blob_id",
		"$.steps.load.output.content",
		"$.steps.validate.status",
		"$.steps.load.output.metadata",
		"$.steps['odd id'].output",
		"$.steps",
		"$.steps[0]",
		"$",
		"not a path",
	}
	assert.Equal(t, []string{"load", "validate", "odd id"}, StepRefs(refs))
	assert.Empty(t, StepRefs(nil))

	id, ok := StepRef("$.steps.load.output")
	assert.True(t, ok)
	assert.Equal(t, "load", id)
	_, ok = StepRef("$.vars.x")
	assert.False(t, ok)
}
