package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
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

// The orchestrator compiles a revision for its first execution only: the executions that
// follow take the compiled workflow, and a new revision is compiled.
func TestOrchestratorCompilesOncePerRevision(t *testing.T) {
	ctx := context.Background()
	var compiles atomic.Int64
	js, _, _ := localSetup(t, func(o *Orchestrator) {
		o.compiled.compile = func(q *events.ExecutionQueued) (*execution.Pinned, error) {
			compiles.Add(1)
			return execution.Compile(q)
		}
	})

	const wf = "id: wf\nsteps:\n  - {id: a, type: transform, input_map: {x: 1}}\n"
	run := func(n, revision int) {
		t.Helper()
		id := fmt.Sprintf("0b7c9a8e-1f7c-4a53-9c39-%012d", n)
		q := queuedOf(t, id, wf, revision)
		b, err := events.Marshal(q)
		require.NoError(t, err)
		_, err = js.Publish(ctx, q.Subject, b, jetstream.WithMsgID(q.ID))
		require.NoError(t, err)
		started := events.NewExecution(&events.ExecutionStarted{ExecutionID: id, Run: 1}, events.SourceDispatcher, time.Now())
		require.NoError(t, inbox.Publish(ctx, js, started))
		require.Eventually(t, func() bool {
			last, err := stream.LastBySubject(ctx, js, streams.Executions, events.ExecutionFilter(id))
			return err == nil && strings.HasSuffix(last.Subject, ".completed")
		}, 30*time.Second, 10*time.Millisecond, "execution %d completes", n)
	}
	run(1, 1)
	run(2, 1)
	assert.EqualValues(t, 1, compiles.Load(), "the second execution of revision 1 takes the compiled workflow")
	run(3, 2)
	assert.EqualValues(t, 2, compiles.Load(), "a new revision is compiled")
}
