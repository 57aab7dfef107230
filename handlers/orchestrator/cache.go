package orchestrator

import (
	"container/list"
	"sync"

	"github.com/memmie/memmie/internal/core/execution"
)

// entry is an execution's state as of the stream sequence of its last event.
type entry struct {
	state execution.State
	// seq is the stream sequence of the execution's last event: the expectation of the next
	// append. 0 means the execution has no event yet.
	seq uint64
	// partition is the inbox partition of the execution's commands.
	partition int
	// traceparent is the trace context of the execution's queued event, which its later
	// events carry on; empty without one, or with tracing off.
	traceparent string
}

// cache is a least-recently-used map of the states of executions that have not ended. The
// states it holds are never changed: the orchestrator clones one, applies to the clone, and
// puts the clone back once the append succeeded.
//
// An ended execution is not kept: almost every later input is stale, which load tells from
// the last event alone, and a retry of a failed one reads its history once. Kept, ended
// executions would fill the cache under sustained load (one per execution that ends) and
// push out the running ones that the next input needs.
type cache struct {
	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used; values are *item
	items map[string]*list.Element
}

type item struct {
	id string
	e  entry
}

func newCache(size int) *cache {
	return &cache{size: size, order: list.New(), items: make(map[string]*list.Element, size)}
}

func (c *cache) get(id string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[id]
	if !ok {
		return entry{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*item).e, true
}

// put holds e as the state of id; an ended execution's state is dropped instead.
func (c *cache) put(id string, e entry) {
	if e.state.Status.Terminal() {
		c.remove(id)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		el.Value.(*item).e = e
		c.order.MoveToFront(el)
		return
	}
	c.items[id] = c.order.PushFront(&item{id: id, e: e})
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*item).id)
	}
}

func (c *cache) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok {
		c.order.Remove(el)
		delete(c.items, id)
	}
}

// removePartition forgets the executions of an inbox partition.
func (c *cache) removePartition(p int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; {
		next := el.Next()
		if it := el.Value.(*item); it.e.partition == p {
			c.order.Remove(el)
			delete(c.items, it.id)
		}
		el = next
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
