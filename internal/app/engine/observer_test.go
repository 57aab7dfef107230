package engine_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
)

// ends is an orchestrator.Observer that records the ends it is told of.
type ends struct {
	mu   sync.Mutex
	seen map[string][]execution.Status
}

func (e *ends) Ended(s *execution.State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[s.ExecutionID] = append(e.seen[s.ExecutionID], s.Status)
}

func (e *ends) of(id string) []execution.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

// An execution's end is told to the orchestrator's Observer once, by the process that
// recorded it: not again when that process dies after the append, before its ack, and the
// input is delivered again to the process that takes over.
func TestObserverIsToldOfEachEndOnce(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	obs := &ends{seen: map[string][]execution.Status{}}
	c := newCluster(t, map[string]string{"svc": svc.URL}, func(cfg *engine.Config) { cfg.Orchestrator.Observer = obs })
	var hits atomic.Int32
	// Commands: 1 start, 2 report of one, 3 report of two, whose decisions end the execution.
	p := c.start("p1", func(at faults.Point, _ string) bool {
		return at == faults.OrchestratorAppended && hits.Add(1) == 3
	})
	client := c.client()
	c.register([]*proc{p, client}, twoSteps)
	id, _, err := client.eng.Start(testContext(t), engine.StartRequest{WorkflowID: "two_steps", Input: []byte(`{"n": 1}`)})
	require.NoError(t, err)
	p.waitCrashed()
	assert.Equal(t, []execution.Status{execution.StatusCompleted}, obs.of(id), "told once the append is acknowledged")
	p.stop()

	again := c.start("p1", nil)
	second, _, err := client.eng.Start(testContext(t), engine.StartRequest{WorkflowID: "two_steps", Input: []byte(`{"n": 2}`)})
	require.NoError(t, err)
	c.waitEnded(2, waitFor)
	// The second execution's three inputs (its start from the inbox, its reports handed over
	// by the runner in the process), and the report of the attempt the crash left
	// unacknowledged, made again and found recorded.
	require.Eventually(t, func() bool {
		st := again.eng.Stats()
		return st.Loops["orchestrator"].Handled+st.Orchestrator.HandedOver >= 4
	}, waitFor, 10*time.Millisecond, "the restarted orchestrator handles the redelivered report")
	assert.Equal(t, []execution.Status{execution.StatusCompleted}, obs.of(second))
	assert.Equal(t, []execution.Status{execution.StatusCompleted}, obs.of(id), "not told again")
}
