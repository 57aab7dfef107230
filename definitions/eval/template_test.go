package eval

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTemplateRender(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"no placeholder", "plain text", "plain text"},
		{"empty", "", ""},
		{"string", "id={$.input.blob_id}", "id=b-1"},
		{"whole string", "{$.input.blob_id}", "b-1"},
		{"integer", "n={$.input.n}", "n=3"},
		{"fraction", "r={$.input.ratio}", "r=0.5"},
		{"bool", "f={$.input.flag}", "f=true"},
		{"list as JSON", "tags={$.input.tags}", `tags=["a","b","c"]`},
		{"object as JSON", "meta={$.steps.load_chapter.output.metadata}", `meta={"chapter_number":7}`},
		{"null", "x={$.input.nothing}.", "x=."},
		{"missing", "x={$.steps.nope.output.text}.", "x=."},
		{"several", "{$.input.blob_id}/{$.input.tags[0]}/{$.input.tags[-1]}", "b-1/a/c"},
		{"quoted name", "{$.input.meta['a b']}", "1"},
		{"brace inside quoted name", "{$.input['a}b']}", ""},
		{"no HTML escaping", "{$.input.tags}<&>", `["a","b","c"]<&>`},
		{"escaped placeholder", "literal {{$.input.n}", "literal {$.input.n}"},
		{"escaped brace then placeholder", "{{{$.input.n}", "{3"},
		{"four braces", "{{{{$", "{{$"},
		{"braces not before $ stay", `{} {"a": {"b": 1}} {{x}} {x}`, `{} {"a": {"b": 1}} {{x}} {x}`},
		{"dollar alone stays", "costs $5 {$.input.n}$", "costs $5 3$"},
		{"closing brace alone stays", "a } b", "a } b"},
		{"unicode around", "héllo {$.vars.lang} wörld", "héllo en wörld"},
		{
			"design notes prompt",
			"Expand the following chapter content:\n\n{$.steps.load_chapter.output.content}\n",
			"Expand the following chapter content:\n\nOnce upon a time\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := CompileTemplate(tt.src)
			require.NoError(t, err)
			got, err := tpl.Render(scope)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.src, tpl.String())
		})
	}
}

func TestCompileTemplateErrors(t *testing.T) {
	tests := []struct {
		src    string
		offset int
		err    string
	}{
		{"{$.input.n", 0, "unclosed placeholder"},
		{"abc {$.input['}'", 4, "unclosed placeholder"},
		{"ok {$.a} then {$", 14, "unclosed placeholder"},
		{"x {$.input[*]} y", 2, "not a singular query"},
		{"x {$..a}", 2, "not a singular query"},
		{"{$.}", 0, "jsonpath"},
		{"{$ .a b}", 0, "jsonpath"},
		{"{{{$.a", 2, "unclosed placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := CompileTemplate(tt.src)
			require.Error(t, err)
			var terr *TemplateError
			require.True(t, errors.As(err, &terr), "want a *TemplateError, got %T", err)
			assert.Equal(t, tt.offset, terr.Offset)
			assert.Contains(t, err.Error(), tt.err)
			assert.Contains(t, err.Error(), "compile template")
		})
	}
	t.Run("too long", func(t *testing.T) {
		_, err := CompileTemplate(strings.Repeat("x", MaxSourceLen+1))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "longer than")
	})
}

func TestTemplateRefs(t *testing.T) {
	tpl, err := CompileTemplate("{$.steps.load.output.content} {$['steps']['load'].output.content} {{$.input.x} {$.input['a b']} {$}")
	require.NoError(t, err)
	assert.Equal(t, []string{"$.steps.load.output.content", "$.input['a b']", "$"}, tpl.Refs())

	plain, err := CompileTemplate("no refs {{$.input.x}")
	require.NoError(t, err)
	assert.Empty(t, plain.Refs())
}

func TestTemplateRenderRejectsNonJSON(t *testing.T) {
	tpl, err := CompileTemplate("{$.x}")
	require.NoError(t, err)
	_, err = tpl.Render(map[string]any{"x": map[string]any{"f": func() {}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "$.x")
}
