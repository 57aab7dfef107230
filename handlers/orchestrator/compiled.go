package orchestrator

import (
	"bytes"
	"container/list"
	"sync"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// compiled is a least-recently-used cache of compiled workflows (execution.Compiler), by
// workflow id and revision: the executions of one revision share one compiled workflow rather
// than each compiling its own. A hit also compares the pinned bytes, so that a revision pinned
// with other bytes (a registry reset, a schema of another revision) is compiled anew, never
// taken for the cached one. Errors are not cached: they are rare and the execution fails.
type compiled struct {
	// compile is execution.Compile; tests count its calls.
	compile func(q *events.ExecutionQueued) (*execution.Pinned, error)

	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used; values are *compiledItem
	items map[compiledKey]*list.Element
}

type compiledKey struct {
	workflow string
	revision int
}

type compiledItem struct {
	key                     compiledKey
	workflow, input, output []byte
	pinned                  *execution.Pinned
}

func newCompiled(size int) *compiled {
	return &compiled{compile: execution.Compile, size: size, order: list.New(), items: map[compiledKey]*list.Element{}}
}

// Compile returns what q pins, compiled once per revision (see execution.Compiler).
func (c *compiled) Compile(q *events.ExecutionQueued) (*execution.Pinned, error) {
	key := compiledKey{q.WorkflowID, q.WorkflowRevision}
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		it := el.Value.(*compiledItem)
		if bytes.Equal(it.workflow, q.Workflow) && bytes.Equal(it.input, q.InputSchema) && bytes.Equal(it.output, q.OutputSchema) {
			c.order.MoveToFront(el)
			c.mu.Unlock()
			return it.pinned, nil
		}
	}
	c.mu.Unlock()

	// Compiled outside the lock: two workers may compile one revision at once, and one wins.
	p, err := c.compile(q)
	if err != nil || c.size <= 0 {
		return p, err
	}
	it := &compiledItem{key: key, workflow: bytes.Clone(q.Workflow), input: bytes.Clone(q.InputSchema),
		output: bytes.Clone(q.OutputSchema), pinned: p}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = it
		c.order.MoveToFront(el)
		return p, nil
	}
	c.items[key] = c.order.PushFront(it)
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*compiledItem).key)
	}
	return p, nil
}

func (c *compiled) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
