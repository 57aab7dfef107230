package dispatcher

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/memmie/memmie/events"
)

// TestView folds queue events into the dispatcher's view: the queue's order and the running
// count.
func TestView(t *testing.T) {
	d := &Dispatcher{execs: map[string]*exec{}, starting: map[string]*exec{}}
	now := time.Now()
	seq := uint64(0)
	feed := func(data events.ExecutionData) {
		seq++
		d.applyEvent(events.NewExecution(data, events.SourceCore, now), seq)
	}
	ids := func() []string {
		var out []string
		for _, e := range d.Queue() {
			out = append(out, e.ExecutionID)
		}
		return out
	}

	feed(&events.ExecutionQueued{ExecutionID: "a", Priority: 0})
	feed(&events.ExecutionQueued{ExecutionID: "b", Priority: 50})
	feed(&events.ExecutionQueued{ExecutionID: "c", Priority: 0})
	feed(&events.ExecutionQueued{ExecutionID: "d", Priority: 50})
	feed(&events.ExecutionQueued{ExecutionID: "a", Priority: 99}) // a second queued event changes nothing
	assert.Equal(t, []string{"b", "d", "a", "c"}, ids())
	assert.Equal(t, 0, d.Running())

	feed(&events.ExecutionStarted{ExecutionID: "b", Run: 1})
	feed(&events.ExecutionCancelled{ExecutionID: "c", Run: 1}) // cancelled while queued
	assert.Equal(t, []string{"d", "a"}, ids())
	assert.Equal(t, 1, d.Running())

	feed(&events.ExecutionRetryScheduled{ExecutionID: "b", Run: 1})
	assert.Equal(t, 0, d.Running(), "waiting for a retry does not count")
	feed(&events.ExecutionRequeued{ExecutionID: "b", Run: 2, RetryCount: 1})
	assert.Equal(t, []string{"d", "b", "a"}, ids(), "a requeued run keeps its priority, behind those queued before")
	assert.Equal(t, 2, d.Queue()[1].Run)

	feed(&events.ExecutionStarted{ExecutionID: "d", Run: 1})
	feed(&events.ExecutionStarted{ExecutionID: "b", Run: 2})
	assert.Equal(t, 2, d.Running())
	feed(&events.ExecutionCompleted{ExecutionID: "d", Run: 1})
	feed(&events.ExecutionFailed{ExecutionID: "b", Run: 2})
	assert.Equal(t, 0, d.Running())
	assert.Equal(t, []string{"a"}, ids())
	assert.NotContains(t, d.execs, "b", "an ended execution is forgotten")
}
