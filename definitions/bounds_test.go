package definitions

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTooManySteps: a workflow past MaxSteps is reported at its steps key.
func TestTooManySteps(t *testing.T) {
	_, err := Load("testdata/invalid/too_many_steps.yaml")
	assertProblems(t, err, []string{"testdata/invalid/too_many_steps.yaml:3: steps: 101 steps, at most 100"})
}

// TestMaxStepsAllowed: exactly MaxSteps steps is a valid workflow.
func TestMaxStepsAllowed(t *testing.T) {
	var b strings.Builder
	b.WriteString("id: longest\nsteps:\n")
	for i := range MaxSteps {
		fmt.Fprintf(&b, "  - {id: s%d, type: transform, input_map: {n: %d}}\n", i, i)
	}
	wf, err := ParseWorkflow("w.yaml", []byte(b.String()))
	require.NoError(t, err)
	require.Len(t, wf.Steps, MaxSteps)
}
