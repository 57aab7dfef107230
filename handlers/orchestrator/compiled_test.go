package orchestrator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// queuedOf returns the queued event of an execution of the given workflow revision.
func queuedOf(t *testing.T, execID, workflowYAML string, revision int) events.Event {
	t.Helper()
	wf, err := definitions.ParseWorkflow("wf.yaml", []byte(workflowYAML))
	require.NoError(t, err)
	b, err := definitions.Canonical(wf)
	require.NoError(t, err)
	return events.NewExecution(&events.ExecutionQueued{ExecutionID: execID, WorkflowID: wf.ID,
		WorkflowRevision: revision, Workflow: b, Input: map[string]any{}}, events.SourceAPI,
		time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC))
}

// An execution of a revision already compiled takes the compiled workflow; a new revision, or
// a revision pinned with other bytes, is compiled.
func TestCompiledOncePerRevision(t *testing.T) {
	c := newCompiled(2)
	compiles := 0
	c.compile = func(q *events.ExecutionQueued) (*execution.Pinned, error) {
		compiles++
		return execution.Compile(q)
	}
	const one = "id: wf\nsteps:\n  - {id: a, type: transform, input_map: {x: 1}}\n"
	const two = "id: wf\nsteps:\n  - {id: a, type: transform, input_map: {x: 2}}\n"
	fold := func(id, src string, revision int) execution.State {
		s, err := execution.FoldWith(c, []events.Event{queuedOf(t, id, src, revision)})
		require.NoError(t, err)
		require.Empty(t, s.DefinitionError)
		return s
	}

	a := fold("ex-1", one, 1)
	b := fold("ex-2", one, 1)
	assert.Equal(t, 1, compiles, "the second execution of revision 1 takes the compiled workflow")
	assert.Same(t, a.Workflow(), b.Workflow())

	var s execution.State // a new execution's state, as the orchestrator decides on it
	s.SetCompiler(c)
	next := s.Clone()
	require.NoError(t, next.Apply(queuedOf(t, "ex-3", one, 1)))
	assert.Equal(t, 1, compiles, "a clone keeps the compiler")
	assert.Same(t, a.Workflow(), next.Workflow())

	fold("ex-4", two, 2)
	assert.Equal(t, 2, compiles, "a new revision is compiled")
	fold("ex-5", two, 1)
	assert.Equal(t, 3, compiles, "revision 1 with other bytes is compiled, not taken for the cached one")

	fold("ex-6", two, 2)
	fold("ex-7", one, 3)
	assert.Equal(t, 4, compiles)
	assert.Equal(t, 2, c.len(), "bounded")
	fold("ex-8", one, 1) // replaced by the other bytes, then evicted
	assert.Equal(t, 5, compiles)
}
