package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// execute runs the CLI in-process and returns its exit code and output.
func execute(t *testing.T, args ...string) (int, string) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0, out.String()
	}
	if ee, ok := err.(*exitError); ok {
		return ee.code, out.String()
	}
	return 1, out.String() + err.Error()
}

func TestValidateExamplesIsSilent(t *testing.T) {
	code, out := execute(t, "validate", "../../definitions")
	require.Equal(t, 0, code, out)
	require.Empty(t, out)
}

func TestValidateBrokenFilesPrintsLinesAndExits1(t *testing.T) {
	dir := t.TempDir()
	wf := filepath.Join(dir, "workflows", "bad.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(wf), 0o755))
	require.NoError(t, os.WriteFile(wf, []byte(`id: bad
steps:
  - id: a
    type: api_call
    service: studio
    endpoint: https://evil.example/x
    method: POST
  - id: a
    type: teleport
`), 0o644))
	code, out := execute(t, "validate", dir)
	require.Equal(t, 1, code)
	require.Contains(t, out, wf+":6: steps[0].endpoint: ")
	require.Contains(t, out, wf+":8: steps[1].id: ")
	require.Contains(t, out, wf+":9: steps[1].type: ")
}

func TestValidateSyntaxErrorsAndMisspeltFields(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "workflows", "bad.yaml")
	broken := filepath.Join(dir, "workflows", "broken.json")
	typo := filepath.Join(dir, "workflows", "typo.yaml")
	require.NoError(t, os.MkdirAll(filepath.Dir(bad), 0o755))
	// The step starts on line 3; the bad indentation is on line 8.
	require.NoError(t, os.WriteFile(bad, []byte(`id: bad
steps:
  - id: a
    type: transform
    input_map:
      x: 1
      y: 2
     z: 3
`), 0o644))
	require.NoError(t, os.WriteFile(broken, []byte("{\n  \"id\": \"broken\",\n  \"steps\": [}\n"), 0o644))
	require.NoError(t, os.WriteFile(typo, []byte(`id: typo
steps:
  - id: a
    type: transform
    input_map: {x: 1}
    timout_seconds: 5
`), 0o644))
	code, out := execute(t, "validate", dir)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, bad+":8: invalid YAML: did not find expected key")
	require.Contains(t, out, broken+":3: invalid JSON: line 3, column 13: invalid character '}'")
	require.Contains(t, out, typo+":6: steps[0].timout_seconds: unknown field (did you mean timeout_seconds?)")
	require.NotContains(t, out, "invalid YAML: did not find expected ',' or ']'")
}
