package eval

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConditionEval(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		src  string
		want bool
	}{
		{"$.steps.validate_blob.output.valid == true", true},
		{"$.steps.validate_blob.output.valid", true},
		{"$.steps.validate_blob.status == 'succeeded'", true},
		{`$.steps.validate_blob.status == "failed"`, false},
		{"$.steps.validate_blob.output.valid == true && $.input.n > 2", true},
		{"$.steps.validate_blob.output.valid == false || $.input.flag", true},
		{"!$.input.flag", false},
		{"not ($.input.n > 10)", true},
		// Numbers from encoding/json are float64 and compare with integer literals.
		{"$.input.n == 3", true},
		{"$.input.n != 3", false},
		{"$.input.n > 10", false},
		{"$.input.n >= 3", true},
		{"$.input.n < 3.5", true},
		{"$.input.ratio == 0.5", true},
		{"$.input.n + 1 == 4", true},
		{"$.input.n * 2 == 6", true},
		{"$.steps.load_chapter.output.metadata.chapter_number % 2 == 1", true},
		{"7 % 2 == 1", true},
		{"$.input.ratio % 0.25 == 0", true},
		// in
		{"$.input.meta.type in ['chapter', 'book']", true},
		{"$.input.meta.type not in ['chapter', 'book']", false},
		{"'b' in $.input.tags", true},
		{"'z' in $.input.tags", false},
		{"'type' in $.input.meta", true},
		{"$.input.n in 1..5", true},
		{"$.input.n in 4..5", false},
		{"$.input.n not in 4..5", true},
		{"$.input.ratio in 0..1", false},
		{"$.input.absent in 0..1", false},
		{"$.input.n in 1..1000000000", true},
		// Missing paths are nil, not errors.
		{"$.steps.missing.output.valid == true", false},
		{"$.steps.missing.output.valid != true", true},
		{"$.steps.missing.output.valid == nil", true},
		{"$.steps.missing.output.valid", false}, // a null result counts as false
		{"$.steps.missing == nil", true},
		{"$.input.tags[5] == nil", true},
		{"$.input.tags[-1] == 'c'", true},
		{"$.input.blob_id.length == nil", true},
		{"$.input.tags.first == nil", true},
		{"$.input.meta[0] == nil", true},
		{"$.input.nothing == nil", true},
		{"($.input.absent ?? 0) > 10", false},
		{"($.input.absent ?? 11) > 10", true},
		{"$.input?.meta?.type == 'chapter'", true},
		// Bracket access and computed keys.
		{"$.input.meta['a b'] == 1", true},
		{`$["steps"]["validate_blob"].output.valid`, true},
		{"$.input.meta[$.vars.key] == nil", true},
		{"$.input.tags[$.input.n - 2] == 'b'", true},
		// Strings and builtins.
		{"$.input.blob_id startsWith 'b-'", true},
		{"$.input.blob_id contains '-'", true},
		{"$.input.blob_id matches '^b-[0-9]+$'", true},
		{"len($.input.tags) == 3", true},
		{"upper($.vars.lang) == 'EN'", true},
		{"$.vars.lang | upper() == 'EN'", true},
		{"$.input.empty == ''", true},
		{"$.input.n > 1 ? $.input.flag : false", true},
		{"type($.input.meta) == 'map'", true},
		{"$.execution.id == 'ex-1' && $.provider_id == 'book:my-novel'", true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			c, err := CompileCondition(tt.src)
			require.NoError(t, err)
			got, err := c.Eval(scope)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.src, c.String())
		})
	}
}

func TestConditionEvalErrors(t *testing.T) {
	scope := decode(t, scopeJSON)
	tests := []struct {
		src string
		err string
	}{
		{"$.input.n", "bool"},
		{"$.input.blob_id", "bool"},
		{"$.input.n % 0 == 1", "divide by zero"},
		{"$.input.n in 1..$.input.blob_id", "invalid range"},
		{"$.input.absent > 10", "<nil> > int"},
		{"$.input.blob_id > 3", "string > int"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			c, err := CompileCondition(tt.src)
			require.NoError(t, err)
			_, err = c.Eval(scope)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
			assert.Contains(t, err.Error(), "evaluate condition")
			assert.NotContains(t, err.Error(), "\n", "errors are one line")
		})
	}
}

func TestCompileConditionRejects(t *testing.T) {
	tests := []struct {
		src string
		err string
	}{
		{"", "unexpected token EOF"},
		{"$.input.n ==", "unexpected token"},
		{"foo == 1", `unknown name "foo"`},
		{"input.n == 1", `unknown name "input"`},
		{"$env.x == 1", `unknown name "$env"`},
		{"1 + 2", "bool"},
		{"'text'", "bool"},
		{"now() > 0", "function now is not allowed"},
		{"repeat('a', 1000000000) == ''", "function repeat is not allowed"},
		{"replace($.input.s, '', 'x') == ''", "function replace is not allowed"},
		{"map(1..10, # * 2) == []", "function map is not allowed"},
		{"all($.input.tags, {# != ''})", "function all is not allowed"},
		{"filter(1..100, filter(1..100, true) == []) == []", "function filter is not allowed"},
		{"reduce(1..10, #acc + #) > 0", "function reduce is not allowed"},
		{"toJSON($) == ''", "function toJSON is not allowed"},
		{"let x = 1; x == 1", "variables (let) are not allowed"},
		{"$get($, 'input') == nil", "unknown function $get"},
		{"myFunc() == 1", "unknown function myFunc"},
		{"$.input.s.Method() == 1", "unknown function"},
		{"$.input.tags[0:2] == []", "slices are not allowed"},
		{strings.Repeat("!", MaxConditionNodes+1) + "true", "maximum allowed nodes"},
		{"$.input" + strings.Repeat(".a", MaxConditionNodes) + " == nil", "maximum allowed nodes"},
		{strings.Repeat(" ", MaxSourceLen+1) + "true", "longer than"},
	}
	for _, tt := range tests {
		name := tt.src
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			_, err := CompileCondition(tt.src)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
			assert.Contains(t, err.Error(), "compile condition")
			assert.NotContains(t, err.Error(), "\n", "errors are one line")
		})
	}
}

// A hostile author cannot make an evaluation slow or large: what could loop is rejected at
// compile time, and what allocates is bounded by the memory budget.
func TestConditionCostLimits(t *testing.T) {
	scope := decode(t, scopeJSON)
	runtimeErrors := []string{
		"1..1000000000 == nil",
		"len(1..100000000) > 0",
		"max(1..1000000000) > 0",
		"[1..10000000, 1..10000000] == nil",
	}
	for _, src := range runtimeErrors {
		t.Run(src, func(t *testing.T) {
			c, err := CompileCondition(src)
			require.NoError(t, err)
			start := time.Now()
			_, err = c.Eval(scope)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "memory budget exceeded")
			assert.Less(t, time.Since(start), time.Second)
		})
	}
	t.Run("large range membership is a comparison", func(t *testing.T) {
		c, err := CompileCondition("$.input.n in 1..1000000000 && 5 not in -1000000000..0")
		require.NoError(t, err)
		start := time.Now()
		got, err := c.Eval(scope)
		require.NoError(t, err)
		assert.True(t, got)
		assert.Less(t, time.Since(start), time.Second)
	})
	t.Run("deep nesting compiles quickly or fails", func(t *testing.T) {
		src := strings.Repeat("(", 20000) + "true" + strings.Repeat(")", 20000)
		start := time.Now()
		c, err := CompileCondition(src)
		if err == nil {
			_, err = c.Eval(scope)
			require.NoError(t, err)
		}
		assert.Less(t, time.Since(start), 5*time.Second)
	})
}

func TestConditionRefs(t *testing.T) {
	tests := []struct {
		src   string
		refs  []string
		steps []string
	}{
		{"true", nil, nil},
		{"$.steps.validate_blob.output.valid == true", []string{"$.steps.validate_blob.output.valid"}, []string{"validate_blob"}},
		{
			"$.steps.a.status == 'succeeded' && $.steps.b.output.x > $.input.n || $.steps.a.status == 'skipped'",
			[]string{"$.steps.a.status", "$.steps.b.output.x", "$.input.n"},
			[]string{"a", "b"},
		},
		{`$["steps"]['c d'].output[0] == 1`, []string{"$.steps['c d'].output[0]"}, []string{"c d"}},
		{"$.input.tags[-1] == 'x'", []string{"$.input.tags[-1]"}, nil},
		{"$.input[$.vars.key] == 1", []string{"$.input", "$.vars.key"}, nil},
		{"$.input?.meta?.type == 'x'", []string{"$.input.meta.type"}, nil},
		{"len($.steps.load.output.items) > 0", []string{"$.steps.load.output.items"}, []string{"load"}},
		{"$ != nil", []string{"$"}, nil},
		{"$.steps.x.output.ok ? $.steps.y.output.ok : $.steps.z.output.ok", []string{"$.steps.x.output.ok", "$.steps.y.output.ok", "$.steps.z.output.ok"}, []string{"x", "y", "z"}},
		{"{'a': $.vars.a}.a == [$.vars.b][0]", []string{"$.vars.a", "$.vars.b"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			c, err := CompileCondition(tt.src)
			require.NoError(t, err)
			assert.Equal(t, tt.refs, c.Refs())
			assert.Equal(t, tt.steps, StepRefs(c.Refs()))
		})
	}
}

// A compiled condition is shared by every execution of a workflow.
func TestConditionConcurrentEval(t *testing.T) {
	c, err := CompileCondition("$.input.n > 10 && $.input.tags[0] == 'a'")
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				n := float64(i*1000 + j)
				got, err := c.Eval(map[string]any{"input": map[string]any{"n": n, "tags": []any{"a"}}})
				if err != nil {
					errs <- err
					return
				}
				if got != (n > 10) {
					errs <- assert.AnError
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
