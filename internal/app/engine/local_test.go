package engine_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/faults"
)

const threeSteps = `
id: three_steps
steps:
  - {id: one, type: api_call, service: svc, endpoint: /one, input_map: {n: $.input.n}}
  - {id: two, type: api_call, service: svc, endpoint: /two, input_map: {prev: $.steps.one.output.ok}}
  - {id: three, type: api_call, service: svc, endpoint: /three, input_map: {prev: $.steps.two.output.ok}}
`

// inboxStored is how many messages the inbox has stored so far (its last sequence).
func inboxStored(t *testing.T, c *cluster) uint64 {
	t.Helper()
	s, err := c.admin.Stream(testContext(t), streams.Inbox)
	require.NoError(t, err)
	info, err := s.Info(testContext(t))
	require.NoError(t, err)
	return info.State.LastSeq
}

// On one process, which consumes every partition, the runner hands every report to the
// orchestrator in the process: the inbox stores only the starts and the runs' deadline
// timers, none of the 3 reports of each execution, and each execution's first input is
// decided on the queued event Start appended, without a read of the stream.
func TestReportsAreRecordedInProcess(t *testing.T) {
	const n = 20
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	c := newCluster(t, map[string]string{"svc": svc.URL})
	p := c.start("p1", nil)
	c.register([]*proc{p}, threeSteps)
	before := inboxStored(t, c)

	ids := startMany(t, []*proc{p}, "three_steps", n)
	c.waitEnded(n, 2*waitFor)
	histories := c.histories()
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two", "three"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}

	stored := inboxStored(t, c) - before
	assert.GreaterOrEqual(t, stored, uint64(n), "the starts")
	assert.LessOrEqual(t, stored, uint64(2*n), "the starts and the deadline timers, no report")
	st := p.eng.Stats()
	require.NotNil(t, st.Reports)
	assert.Zero(t, st.Reports.Published, "no report published to the inbox")
	assert.GreaterOrEqual(t, st.Reports.HandedOver, uint64(3*n))
	assert.Equal(t, st.Reports.HandedOver, st.Orchestrator.HandedOver)
	assert.Zero(t, st.Orchestrator.HistoryLoads)
	assert.Zero(t, st.Loops["orchestrator"].DeadLettered)
	t.Logf("inbox: %.2f messages stored per execution; orchestrator %+v", float64(stored)/n, st.Orchestrator)
}

// With two processes, each consuming half the partitions, a runner that made the attempt of
// an execution of the other process's partitions publishes its report to the inbox, as
// without the hand-over, and those of its own partitions are recorded in the process. Every
// execution completes with one result per attempt either way.
func TestReportsOfOtherPartitionsGoThroughTheInbox(t *testing.T) {
	const n = 40
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	c := newCluster(t, map[string]string{"svc": svc.URL})
	procs := []*proc{c.start("p1", nil), c.start("p2", nil)}
	c.register(procs, twoSteps)
	require.Eventually(t, func() bool {
		a, b := procs[0].eng.Stats(), procs[1].eng.Stats()
		return len(a.Orchestrator.Partitions) > 0 && len(b.Orchestrator.Partitions) > 0 &&
			len(a.Orchestrator.Partitions)+len(b.Orchestrator.Partitions) == streams.DefaultPartitions
	}, waitFor, 10*time.Millisecond, "the processes share the partitions")
	before := inboxStored(t, c)

	ids := startMany(t, procs, "two_steps", n)
	c.waitEnded(n, 2*waitFor)
	histories := c.histories()
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}

	var published, handedOver uint64
	for _, p := range procs {
		st := p.eng.Stats()
		require.NotNil(t, st.Reports)
		published += st.Reports.Published
		handedOver += st.Reports.HandedOver
		assert.Equal(t, st.Reports.HandedOver, st.Orchestrator.HandedOver, "%s: every hand-over is its own orchestrator's", p.id)
	}
	assert.Positive(t, published, "reports of the other process's partitions go through the inbox")
	assert.Positive(t, handedOver, "reports of the process's own partitions do not")
	assert.GreaterOrEqual(t, published+handedOver, uint64(2*n))
	assert.GreaterOrEqual(t, inboxStored(t, c)-before, uint64(n)+published, "the starts and the published reports")
	t.Logf("%d reports published, %d handed over", published, handedOver)
}

// A report handed over to the orchestrator in the process is lost with it when the process
// dies before its append: the attempt was not acknowledged, so it is delivered again after the
// restart, called again (the same attempt, under the same idempotency key) and recorded once.
func TestHandedOverReportLostInACrash(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	c := newCluster(t, map[string]string{"svc": svc.URL})
	var decided atomic.Int32
	// Decisions: 1 the start, 2 the report of one, handed over by the runner.
	p := c.start("p1", func(at faults.Point, _ string) bool {
		return at == faults.OrchestratorDecided && decided.Add(1) == 2
	})
	client := c.client()
	c.register([]*proc{p, client}, twoSteps)
	id, _, err := client.eng.Start(testContext(t), engine.StartRequest{WorkflowID: "two_steps", Input: []byte(`{"n": 1}`)})
	require.NoError(t, err)
	p.waitCrashed()
	st := p.eng.Stats()
	require.NotNil(t, st.Reports)
	assert.Zero(t, st.Reports.Published, "the report was handed over, not published")
	assert.EqualValues(t, 1, st.Loops["orchestrator"].Handled, "only the start came through the inbox")
	p.stop()

	c.start("p1", nil)
	c.waitEnded(1, waitFor)
	assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, c.histories()[id], events.TypeExecutionCompleted))
	var attempts []string
	for _, call := range svc.Calls() {
		if call.Path == "/one" {
			attempts = append(attempts, call.Headers["X-Memmie-Attempt"])
			assert.Equal(t, id+"/one", call.Headers["Idempotency-Key"])
		}
	}
	assert.Equal(t, []string{"1", "1"}, attempts, "attempt 1 of one is called again after the restart")
}
