package eval

import (
	"strings"
	"testing"
)

// fuzzScope is a scope with a little of everything for fuzzed programs to read.
func fuzzScope(t testing.TB) any { return decode(t, scopeJSON) }

func FuzzCompilePath(f *testing.F) {
	for _, s := range []string{
		"$", "$.input.blob_id", "$.steps.load.output.content", "$['a b'][0]", `$["k'q"]`, "$.a[-1]",
		"$.a[*]", "$..a", "$.a[0:2]", "$.a[?@.b == 1]", "$.a[", "@.a", "", "$.a.", "$['\\u00e9']",
		"$[9007199254740991]", "$.\u00e9t\u00e9",
	} {
		f.Add(s)
	}
	scope := fuzzScope(f)
	f.Fuzz(func(t *testing.T, src string) {
		p, err := CompilePath(src)
		if err != nil {
			return
		}
		p.Eval(scope)
		// The canonical form compiles to the same path.
		again, err := CompilePath(p.Canonical())
		if err != nil {
			t.Fatalf("canonical %q of %q does not compile: %v", p.Canonical(), src, err)
		}
		if again.Canonical() != p.Canonical() {
			t.Fatalf("canonical %q of %q is not stable: %q", p.Canonical(), src, again.Canonical())
		}
	})
}

func FuzzCompileTemplate(f *testing.F) {
	for _, s := range []string{
		"", "plain", "{$.input.blob_id}", "a {$.input.n} b {$.input.tags} c", "{{$.x}", "{{{$.input.n}",
		"{$.input['a}b']}", `{$["q\"}"]}`, "{$", "{$.a", "{$.a[*]}", "{} {x} {{", "}}}", "{$}", "$",
		"Expand:\n\n{$.steps.load_chapter.output.content}\n",
	} {
		f.Add(s)
	}
	scope := fuzzScope(f)
	f.Fuzz(func(t *testing.T, src string) {
		tpl, err := CompileTemplate(src)
		if err != nil {
			return
		}
		out, err := tpl.Render(scope)
		if err != nil {
			t.Fatalf("render %q: %v", src, err)
		}
		again, _ := tpl.Render(scope)
		if out != again {
			t.Fatalf("render %q is not deterministic", src)
		}
		for _, r := range tpl.Refs() {
			if _, err := CompilePath(r); err != nil {
				t.Fatalf("ref %q of %q does not compile: %v", r, src, err)
			}
		}
		// A template without "{" renders as itself.
		if !strings.Contains(src, "{") && out != src {
			t.Fatalf("template %q without braces renders %q", src, out)
		}
	})
}

func FuzzCompileCondition(f *testing.F) {
	for _, s := range []string{
		"$.steps.validate_blob.output.valid == true", "$.input.n > 10 && $.input.flag", "$.input.n % 2 == 1",
		"'b' in $.input.tags", "$.input.n in 1..1000000000", "$.input[$.vars.lang] == nil", "len($.input.tags) > 1",
		"$.steps.missing.output.valid", "($.input.absent ?? 0) > 1", "1..1000000 == nil", "repeat('a', 9)",
		"map(1..9, #)", "let x = 1; x", "$env", "$.input?.meta?.type", "$.input.tags[-1:]", "{'a': [1, 2]}.a[1] == 2",
		"$.input.blob_id matches '^b'", "true ? 1 : 2", "if true { true } else { false }", "#", "$get($, 'x')",
	} {
		f.Add(s)
	}
	scope := fuzzScope(f)
	f.Fuzz(func(t *testing.T, src string) {
		c, err := CompileCondition(src)
		if err != nil {
			return
		}
		_, _ = c.Eval(scope)
		_, _ = c.Eval(nil)
		for _, r := range c.Refs() {
			if _, err := CompilePath(r); err != nil {
				t.Fatalf("ref %q of %q does not compile: %v", r, src, err)
			}
		}
	})
}

func FuzzCompilePathTemplate(f *testing.F) {
	for _, s := range []string{
		"/", "/blobs/{blob_id}", "/v{v}/{id}.json", "/a/../b", "/a/%2e%2e", "http://x", "//x", "/a?b", "/{", "/a/{x}{y}",
	} {
		f.Add(s, "x")
	}
	f.Fuzz(func(t *testing.T, src, value string) {
		pt, err := CompilePathTemplate(src)
		if err != nil {
			return
		}
		input := map[string]any{}
		for _, p := range pt.Params() {
			input[p] = value
		}
		out, err := pt.Expand(input)
		if err != nil {
			return
		}
		if !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") || strings.ContainsAny(out, "?#") {
			t.Fatalf("endpoint %q with %q expanded to %q", src, value, out)
		}
		if checkDotSegments(out) != nil {
			t.Fatalf("endpoint %q with %q expanded to a dot segment: %q", src, value, out)
		}
	})
}
