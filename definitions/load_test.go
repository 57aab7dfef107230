package definitions

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The example definitions of this directory load clean as a set: this is `memmie validate
// definitions/`.
func TestExamplesLoadClean(t *testing.T) {
	set, err := Load(".")
	require.NoError(t, err)

	ids := func(defs []Definition) []string {
		out := []string{}
		for _, d := range defs {
			out = append(out, d.DefinitionID())
		}
		return out
	}
	var schemas, workflows, providers []Definition
	for _, s := range set.Schemas {
		schemas = append(schemas, s)
		assert.NotNil(t, s.Compiled, s.ID)
	}
	for _, w := range set.Workflows {
		workflows = append(workflows, w)
		require.NotNil(t, w.Compiled, w.ID)
		assert.Len(t, w.Compiled.Steps, len(w.Steps), w.ID)
	}
	for _, p := range set.Providers {
		providers = append(providers, p)
	}
	assert.ElementsMatch(t, []string{"blob_input_schema_v1", "blob_output_schema_v1"}, ids(schemas))
	assert.ElementsMatch(t, []string{"blob_processing_workflow", "book_chapter_processing",
		"book_outline_generation", "blob_summary"}, ids(workflows))
	assert.ElementsMatch(t, []string{"book-writer", "blob-summary"}, ids(providers))

	// The workflow that runs with no external service has only transform steps.
	for _, s := range set.Workflow("blob_summary").Steps {
		assert.Equal(t, StepTransform, s.Type, s.ID)
	}
	// Every workflow's output becomes deltas: its output_map writes the keys the delta
	// transformer reads.
	for _, w := range set.Workflows {
		require.NotNil(t, w.OutputMap, w.ID)
		for k := range w.OutputMap {
			assert.Contains(t, []string{"delta_operations", "transformed_content", "created_blobs"}, k, w.ID)
		}
	}
}

// Each example survives the trip the execution core makes: canonical JSON, decoded with
// encoding/json, compiled again; and reading the canonical JSON gives the same canonical JSON.
func TestExamplesCanonicalRoundTrip(t *testing.T) {
	set, err := Load(".")
	require.NoError(t, err)
	var defs []Definition
	for _, s := range set.Schemas {
		defs = append(defs, s)
	}
	for _, w := range set.Workflows {
		defs = append(defs, w)
	}
	for _, p := range set.Providers {
		defs = append(defs, p)
	}
	for _, def := range defs {
		t.Run(def.DefinitionID(), func(t *testing.T) {
			canon, err := Canonical(def)
			require.NoError(t, err)

			again, err := Parse("canonical.json", canon, def.Kind())
			require.NoError(t, err)
			canon2, err := Canonical(again)
			require.NoError(t, err)
			assert.JSONEq(t, string(canon), string(canon2))
			assert.Equal(t, string(canon), string(canon2))

			switch def := def.(type) {
			case *Workflow:
				var w Workflow
				require.NoError(t, json.Unmarshal(canon, &w))
				require.NoError(t, w.Compile())
				require.NotNil(t, w.Compiled)
				assert.Len(t, w.Compiled.Steps, len(def.Steps))
				assert.Equal(t, def.Compiled.OutputMap.Refs(), w.Compiled.OutputMap.Refs())
			case *Schema:
				var s Schema
				require.NoError(t, json.Unmarshal(canon, &s))
				require.NoError(t, s.Compile())
				require.NotNil(t, s.Compiled)
			case *Provider:
				var p Provider
				require.NoError(t, json.Unmarshal(canon, &p))
				require.NoError(t, p.Compile())
			}
		})
	}
}

func TestCompileReportsProblemsWithoutFile(t *testing.T) {
	var w Workflow
	require.NoError(t, json.Unmarshal([]byte(`{"id":"wf","steps":[
		{"id":"a","type":"transform","input_map":{"x":"$.steps.b.output"}},
		{"id":"b","type":"api_call","service":"core","endpoint":"/x","retry":{"max_attempts":-1}}]}`), &w))
	err := w.Compile()
	assert.Nil(t, w.Compiled)
	assert.Equal(t, []string{
		`steps[0].input_map.x: $.steps.b.output refers to step "b", which does not run before this step`,
		`steps[1].retry.max_attempts: must not be negative`,
	}, problemLines(t, err))
}

func TestCanonicalIgnoresFormatting(t *testing.T) {
	yamlDoc := "id: wf\nsteps:\n  - id: a\n    type: transform\n    input_map: {b: 2, a: 1}\n"
	jsonDoc := `{"steps": [{"input_map": {"a": 1.0, "b": 2}, "type": "transform", "id": "a"}], "id": "wf"}`
	w1, err := ParseWorkflow("w.yaml", []byte(yamlDoc))
	require.NoError(t, err)
	w2, err := ParseWorkflow("w.json", []byte(jsonDoc))
	require.NoError(t, err)
	c1, err := Canonical(w1)
	require.NoError(t, err)
	c2, err := Canonical(w2)
	require.NoError(t, err)
	assert.Equal(t, `{"id":"wf","steps":[{"id":"a","type":"transform","input_map":{"a":1,"b":2}}]}`, string(c1))
	assert.Equal(t, string(c1), string(c2))
}

func TestAliasBomb(t *testing.T) {
	// The classic "billion laughs": nine levels of ten aliases each.
	var b strings.Builder
	b.WriteString("id: wf\nsteps:\n  - id: a\n    type: transform\n    input_map:\n")
	b.WriteString("      l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 1; i <= 9; i++ {
		refs := strings.Repeat("*l"+itoa(i-1)+",", 10)
		b.WriteString("      l" + itoa(i) + ": &l" + itoa(i) + " [" + strings.TrimSuffix(refs, ",") + "]\n")
	}
	doc := b.String()
	require.Less(t, len(doc), 1000)

	_, err := ParseWorkflow("bomb.yaml", []byte(doc))
	got := problemLines(t, err)
	require.Len(t, got, 1, strings.Join(got, "\n"))
	assert.Contains(t, got[0], "expands to more than 200000 nodes")
	assert.True(t, strings.HasPrefix(got[0], "bomb.yaml:"), got[0])
}

// Long keys repeated through aliases make long field paths; they are bounded too.
func TestAliasBombWithLongKeys(t *testing.T) {
	key := strings.Repeat("k", 8000)
	doc := "id: wf\nsteps:\n  - id: a\n    type: transform\n    input_map:\n" +
		// Keys longer than 1024 characters must be explicit (? key : value) in YAML.
		"      l0: &l0\n        ? " + key + "1\n        :\n          ? " + key + "2\n          : 1\n" +
		"      l1: &l1 [" + strings.TrimSuffix(strings.Repeat("*l0,", 100), ",") + "]\n" +
		"      l2: &l2 [" + strings.TrimSuffix(strings.Repeat("*l1,", 100), ",") + "]\n"
	_, err := ParseWorkflow("bomb.yaml", []byte(doc))
	got := problemLines(t, err)
	require.Len(t, got, 1, strings.Join(got, "\n"))
	assert.Contains(t, got[0], "MiB of field paths (YAML alias bomb?)")
}

func TestAliasesWithinLimitsWork(t *testing.T) {
	doc := `
id: wf
steps:
  - id: a
    type: api_call
    service: core
    endpoint: /x
    retry: &retry {max_attempts: 3, backoff_ms: 100}
  - id: b
    type: api_call
    service: core
    endpoint: /y
    retry: *retry
`
	w, err := ParseWorkflow("w.yaml", []byte(doc))
	require.NoError(t, err)
	assert.Equal(t, w.Steps[0].Retry, w.Steps[1].Retry)
	assert.Equal(t, 3, w.Steps[1].Retry.MaxAttempts)
}

func TestDeepNesting(t *testing.T) {
	doc := "id: wf\nsteps:\n  - id: a\n    type: transform\n    input_map:\n      x: " +
		strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n"
	_, err := ParseWorkflow("deep.yaml", []byte(doc))
	got := problemLines(t, err)
	require.Len(t, got, 1, strings.Join(got, "\n"))
	assert.Contains(t, got[0], "deep.yaml:6: steps[0].input_map.x")
	assert.Contains(t, got[0], "nested deeper than 64 levels")
}

func TestOversizeFile(t *testing.T) {
	big := []byte("id: wf\ndescription: \"" + strings.Repeat("x", MaxFileSize) + "\"\n")
	_, err := ParseWorkflow("big.yaml", big)
	assert.Equal(t, []string{"big.yaml:1: file is 1048599 bytes, larger than the limit of 1048576"}, problemLines(t, err))

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big.yaml"), big, 0o644))
	_, err = Load(dir)
	assert.Equal(t, []string{filepath.Join(dir, "big.yaml") + ":1: file is larger than the limit of 1048576 bytes"}, problemLines(t, err))
}

// writeTree writes files below dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
}

const okWorkflow = "id: wf\nsteps:\n  - id: a\n    type: transform\n    input_map: {x: 1}\n"

func TestLoadWalksTheTree(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		// Read: kind by folder, nested folders, .yml and .json.
		"workflows/wf.yaml":           okWorkflow,
		"workflows/nested/other.yml":  strings.Replace(okWorkflow, "id: wf", "id: wf2", 1),
		"schemas/s.json":              `{"id": "s", "definition": {"type": "object"}}`,
		"providers/p.yaml":            "provider: {id: p}\nworkflows:\n  - workflow_id: wf\n    triggers: [{event: onCreate}]\n",
		"elsewhere/by-content.yaml":   "id: s2\ndefinition: {type: string}\n",
		"elsewhere/by-content-w.json": `{"id": "wf3", "steps": [{"id": "a", "type": "transform", "input_map": {"x": 1}}]}`,
		// Skipped: testdata, dot-directories, dot-files, other extensions.
		"testdata/broken.yaml":           "id: [",
		"workflows/testdata/broken.yaml": "id: [",
		".git/broken.yaml":               "id: [",
		"workflows/.hidden/broken.yaml":  "id: [",
		"workflows/.#lock.yaml":          "id: [",
		"workflows/README.md":            "id: [",
	})
	set, err := Load(dir)
	require.NoError(t, err)
	assert.Len(t, set.Workflows, 3)
	assert.Len(t, set.Schemas, 2)
	assert.Len(t, set.Providers, 1)
	assert.NotNil(t, set.Workflow("wf3"))
	assert.NotNil(t, set.Schema("s2"))

	// A folder says the kind even when the content says another.
	writeTree(t, dir, map[string]string{"providers/not-a-provider.yaml": "id: s3\ndefinition: {type: string}\n"})
	_, err = Load(dir)
	file := filepath.Join(dir, "providers/not-a-provider.yaml")
	assert.Equal(t, []string{file + ":1: id", file + ":1: provider.id", file + ":1: workflows", file + ":2: definition"},
		cutMessages(problemLines(t, err)))
}

func TestLoadNamedFileAndMissingPath(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"workflows/wf.txt": okWorkflow})
	// A file named on the command line is read whatever its extension; its folder tells its kind.
	set, err := Load(filepath.Join(dir, "workflows/wf.txt"))
	require.NoError(t, err)
	assert.Len(t, set.Workflows, 1)

	missing := filepath.Join(dir, "nope")
	_, err = Load(missing)
	assert.Equal(t, []string{missing + ":1: stat: no such file or directory"}, problemLines(t, err))
}

func TestLoadFromDotDirectory(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"workflows/wf.yaml": okWorkflow})
	t.Chdir(filepath.Join(dir, "workflows"))
	set, err := Load(".")
	require.NoError(t, err)
	assert.Len(t, set.Workflows, 1)
}

// cutMessages keeps file:line: field of each problem line.
func cutMessages(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		parts := strings.SplitN(l, ": ", 3)
		out[i] = strings.Join(parts[:min(2, len(parts))], ": ")
	}
	return out
}

func TestSetProblems(t *testing.T) {
	_, err := Load("testdata/invalid/set")
	assert.Equal(t, []string{
		"testdata/invalid/set/providers/writer.yaml:4: workflows[0].triggers: at least one trigger is required",
		"testdata/invalid/set/providers/writer.yaml:5: workflows[1].workflow_id: unknown workflow \"missing_workflow\"",
		"testdata/invalid/set/providers/writer.yaml:7: workflows[2].workflow_id: workflow \"summarize\" is bound twice (also workflows[0]); list its triggers in one binding",
		"testdata/invalid/set/providers/writer2.yaml:2: provider.id: duplicate provider id \"writer\" (also in testdata/invalid/set/providers/writer.yaml:2)",
		"testdata/invalid/set/schemas/in.yaml:1: id: duplicate schema id \"in\" (also in testdata/invalid/set/schemas/again.yaml:1)",
		"testdata/invalid/set/workflows/a.yaml:3: input_schema_id: unknown schema \"nope\"",
		"testdata/invalid/set/workflows/a.yaml:4: output_schema_id: schema \"in\" is an input schema, not an output schema",
		"testdata/invalid/set/workflows/b.yaml:1: id: duplicate workflow id \"summarize\" (also in testdata/invalid/set/workflows/a.yaml:1)",
	}, problemLines(t, err))
}

func itoa(i int) string { return string(rune('0' + i)) }
