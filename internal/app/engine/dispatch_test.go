package engine_test

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
)

// TestDispatchByPriorityThenFIFO keeps one execution running (max running 1) while others
// queue up, and checks they start higher priority first, in arrival order within a priority.
func TestDispatchByPriorityThenFIFO(t *testing.T) {
	release := make(chan struct{})
	var inFlight, maxInFlight atomic.Int32
	svc := newService(t, func(c call, n int) (int, any) {
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for old := maxInFlight.Load(); now > old && !maxInFlight.CompareAndSwap(old, now); old = maxInFlight.Load() {
		}
		if body, _ := c.Body.(map[string]any); body["name"] == "blocker" {
			select {
			case <-release:
			case <-c.ctx.Done():
				return 0, nil
			}
		} else {
			time.Sleep(20 * time.Millisecond) // a service that takes its time, so overlaps would show
		}
		return 200, map[string]any{}
	})
	h := newHarness(t, map[string]string{"svc": svc.URL}, withMaxRunning(1))
	h.register(`
id: named
steps:
  - id: run
    type: api_call
    service: svc
    endpoint: /run
    input_map: {name: $.input.name}
`)
	ctx := testContext(t)
	start := func(name string, priority int) string {
		t.Helper()
		in, _ := json.Marshal(map[string]any{"name": name})
		id, _, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "named", Input: in, Priority: priority})
		require.NoError(t, err)
		return id
	}
	ids := map[string]string{"blocker": start("blocker", 0)}
	svc.waitCalls(t, 1)
	for _, q := range []struct {
		name     string
		priority int
	}{{"low-1", 0}, {"high-1", 50}, {"mid", 10}, {"high-2", 50}, {"low-2", 0}} {
		ids[q.name] = start(q.name, q.priority)
	}
	want := []string{"high-1", "high-2", "mid", "low-1", "low-2"}
	require.Eventually(t, func() bool {
		queued, running := h.eng.Queue()
		if running != 1 || len(queued) != len(want) {
			return false
		}
		for i, e := range queued {
			if e.ExecutionID != ids[want[i]] {
				return false
			}
		}
		return true
	}, waitFor, 10*time.Millisecond, "the queue is ordered by priority, then arrival")

	close(release)
	for name, id := range ids {
		assert.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status, name)
	}
	var order []string
	for _, c := range svc.Calls() {
		order = append(order, c.Body.(map[string]any)["name"].(string))
	}
	assert.Equal(t, append([]string{"blocker"}, want...), order)
	assert.Equal(t, int32(1), maxInFlight.Load(), "one execution at a time")
}
