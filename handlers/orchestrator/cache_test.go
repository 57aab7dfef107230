package orchestrator

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/memmie/memmie/internal/core/execution"
)

func TestCache(t *testing.T) {
	c := newCache(3)
	c.put("a", entry{seq: 1, partition: 0})
	c.put("b", entry{seq: 2, partition: 1})
	c.put("c", entry{seq: 3, partition: 0})
	_, ok := c.get("a") // a is now the most recently used
	assert.True(t, ok)
	c.put("d", entry{seq: 4, partition: 1})
	_, ok = c.get("b")
	assert.False(t, ok, "the least recently used is evicted")
	assert.Equal(t, 3, c.len())

	c.put("a", entry{seq: 5, partition: 0})
	e, _ := c.get("a")
	assert.Equal(t, uint64(5), e.seq, "a put replaces")

	c.removePartition(0)
	_, okA := c.get("a")
	_, okC := c.get("c")
	d, okD := c.get("d")
	assert.False(t, okA || okC, "the partition's executions are forgotten")
	assert.True(t, okD, "the others stay")
	assert.Equal(t, uint64(4), d.seq)
	assert.Equal(t, 1, c.len())
	c.remove("d")
	assert.Zero(t, c.len())
}

func TestCacheDropsEndedExecutions(t *testing.T) {
	c := newCache(3)
	running := entry{seq: 1}
	running.state.Status = execution.StatusRunning
	c.put("a", running)
	c.put("b", running)
	for _, s := range []execution.Status{execution.StatusCompleted, execution.StatusFailed, execution.StatusCancelled} {
		ended := entry{seq: 2}
		ended.state.Status = s
		c.put("a", ended)
		_, ok := c.get("a")
		assert.False(t, ok, "an execution %s is not kept", s)
		c.put("a", running)
	}
	_, ok := c.get("b")
	assert.True(t, ok, "the running one stays")
	assert.Equal(t, 2, c.len())
}
