package definitions

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// seedCorpus adds the example definitions and a few hostile documents.
func seedCorpus(f *testing.F, dirs ...string) {
	for _, dir := range dirs {
		for _, pattern := range []string{"*.yaml", "*.json"} {
			files, err := filepath.Glob(filepath.Join(dir, pattern))
			require.NoError(f, err)
			for _, file := range files {
				data, err := readFile(file)
				require.NoError(f, err)
				f.Add(data)
			}
		}
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {y: *x}\nsteps: *x\n"))
	f.Add([]byte("{\"steps\": [{\"id\": \"a\", \"type\": \"transform\", \"input_map\": {\"x\": \"{$.input.x}\"}}], \"id\": \"w\"}"))
	f.Add([]byte("id: w\nsteps:\n  - <<: {type: transform}\n    id: a\n"))
	f.Add([]byte("provider: {id: p}\nworkflows: [{workflow_id: w, triggers: [{event: onCreate, conditions: [{field: a, operator: matches, value: '(a+)+'}]}]}]\n"))
}

// checkParse is what every fuzz target asserts: no panic; every problem names the file and a
// line; a definition that parses has canonical JSON that parses to the same canonical JSON, and
// a workflow decoded from it with encoding/json compiles.
func checkParse(t *testing.T, kind Kind, data []byte) {
	def, err := Parse("fuzz.yaml", data, kind)
	if err != nil {
		var probs Problems
		require.True(t, errors.As(err, &probs), "error is not Problems: %v", err)
		require.NotEmpty(t, probs)
		for _, p := range probs {
			require.Equal(t, "fuzz.yaml", p.File, p.String())
			require.GreaterOrEqual(t, p.Line, 1, p.String())
			require.NotEmpty(t, p.Message, p.String())
		}
		return
	}
	canon, err := Canonical(def)
	require.NoError(t, err)
	again, err := Parse("canonical.json", canon, def.Kind())
	require.NoError(t, err, "canonical JSON %s does not parse", canon)
	canon2, err := Canonical(again)
	require.NoError(t, err)
	require.Equal(t, string(canon), string(canon2))

	switch def.Kind() {
	case KindWorkflow:
		var w Workflow
		require.NoError(t, json.Unmarshal(canon, &w))
		require.NoError(t, w.Compile(), "canonical JSON %s does not compile", canon)
	case KindSchema:
		var s Schema
		require.NoError(t, json.Unmarshal(canon, &s))
		require.NoError(t, s.Compile(), "canonical JSON %s does not compile", canon)
	case KindProvider:
		var p Provider
		require.NoError(t, json.Unmarshal(canon, &p))
		require.NoError(t, p.Compile(), "canonical JSON %s does not compile", canon)
		for _, b := range p.Workflows {
			b.Matches(EventOnCreate, map[string]any{"metadata": map[string]any{"type": "chapter"}})
		}
	}
}

func FuzzParseWorkflow(f *testing.F) {
	seedCorpus(f, "workflows")
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, KindWorkflow, data) })
}

func FuzzParseSchema(f *testing.F) {
	seedCorpus(f, "schemas")
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, KindSchema, data) })
}

func FuzzParseProvider(f *testing.F) {
	seedCorpus(f, "providers")
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, KindProvider, data) })
}

// FuzzParse lets the content tell the kind, as the loader does outside the kind folders.
func FuzzParse(f *testing.F) {
	seedCorpus(f, "workflows", "schemas", "providers", "testdata/invalid/set/workflows",
		"testdata/invalid/set/schemas", "testdata/invalid/set/providers")
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, "", data) })
}
