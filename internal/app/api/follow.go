package api

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// folded is an execution's state folded from its history up to stream sequence seq. It only
// moves forward: every message of the execution at or below seq is applied, none above.
type folded struct {
	mu    sync.Mutex
	seq   uint64
	state execution.State
	// body is the state's JSON at seq; nil until asked for after a change.
	body []byte
	elem *list.Element
}

// apply applies msg when it is above f's sequence. On an error f is emptied: the next read
// folds the history from its start. f.mu is held.
func (f *folded) apply(msg jetstream.RawStreamMsg) error {
	if msg.Sequence <= f.seq {
		return nil
	}
	history, err := orchestrator.Decode([]jetstream.RawStreamMsg{msg})
	if err == nil {
		for _, ev := range history {
			if err = f.state.Apply(ev); err != nil {
				break
			}
		}
	}
	if err != nil {
		f.reset()
		return err
	}
	f.seq, f.body = msg.Sequence, nil
	return nil
}

func (f *folded) reset() { f.seq, f.state, f.body = 0, execution.State{}, nil }

// snapshot returns the state's JSON, its status and its sequence. f.mu is held.
func (f *folded) snapshot() (answer, error) {
	if f.body == nil {
		b, err := json.Marshal(&f.state)
		if err != nil {
			return answer{}, fmt.Errorf("encode the state of %s: %w", f.state.ExecutionID, err)
		}
		f.body = b
	}
	return answer{body: f.body, status: f.state.Status, seq: f.seq}, nil
}

// answer is a state as the API serves it.
type answer struct {
	body   []byte
	status execution.Status
	seq    uint64
}

// states keeps the last folded states read, at most max of them, the least recently read
// dropped first.
type states struct {
	js  jetstream.JetStream
	max int

	mu  sync.Mutex
	m   map[string]*folded
	lru *list.List
}

func newStates(js jetstream.JetStream, max int) *states {
	return &states{js: js, max: max, m: map[string]*folded{}, lru: list.New()}
}

// get returns the cached state of id, a new empty one when there is none.
func (c *states) get(id string) *folded {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.m[id]; ok {
		c.lru.MoveToFront(f.elem)
		return f
	}
	f := &folded{}
	f.elem = c.lru.PushFront(id)
	c.m[id] = f
	for c.lru.Len() > c.max {
		last := c.lru.Back()
		delete(c.m, last.Value.(string))
		c.lru.Remove(last)
	}
	return f
}

// read returns the state of id up to last, the sequence of its last message: from the cache
// when it is there already, reading only the messages after the cached state otherwise.
func (c *states) read(ctx context.Context, id string, last uint64) (answer, error) {
	f := c.get(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seq > last {
		// Fewer messages than cached: the stream was purged or made again. Fold anew.
		f.reset()
	}
	if f.seq < last {
		msgs, err := stream.LoadAfter(ctx, c.js, streams.Executions, events.ExecutionFilter(id), f.seq)
		if err != nil {
			return answer{}, fmt.Errorf("history of %s after %d: %w", id, f.seq, err)
		}
		for _, m := range msgs {
			if err := f.apply(m); err != nil {
				return answer{}, fmt.Errorf("state of %s: message %d: %w", id, m.Sequence, err)
			}
		}
	}
	return f.snapshot()
}

// follow calls emit with the state of id once it holds every message up to last, the
// sequence of its last message when the request came, then after each change, until the
// execution ends (its status is terminal: emit's last call), ctx is done or emit fails. It
// follows the execution's subjects with an ordered consumer from the cached state's
// sequence, deleted when it returns.
func (c *states) follow(ctx context.Context, id string, last uint64, emit func(answer) error) error {
	f := c.get(id)
	f.mu.Lock()
	if f.seq > last {
		f.reset()
	}
	from := f.seq
	var (
		a   answer
		err error
	)
	if from >= last {
		a, err = f.snapshot()
	}
	f.mu.Unlock()
	emitted := uint64(0)
	if from >= last {
		if err != nil {
			return err
		}
		if err := emit(a); err != nil || a.status.Terminal() {
			return err
		}
		emitted = a.seq
	}

	cons, err := c.js.OrderedConsumer(ctx, streams.Executions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.ExecutionFilter(id)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from + 1,
		// A consumer left behind (the delete below failed) goes away on its own.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("follow %s: %w", id, err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = c.js.DeleteConsumer(delCtx, streams.Executions, info.Name)
			cancel()
		}
	}()
	// A short pull expiry brings heartbeats: a consumer lost in a server restart is
	// recreated within seconds.
	it, err := cons.Messages(jetstream.PullExpiry(5 * time.Second))
	if err != nil {
		return fmt.Errorf("follow %s: %w", id, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow %s: %w", id, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("follow %s: %w", id, err)
		}
		f.mu.Lock()
		err = f.apply(jetstream.RawStreamMsg{Subject: msg.Subject(), Sequence: md.Sequence.Stream,
			Header: msg.Headers(), Data: msg.Data(), Time: md.Timestamp})
		var a answer
		// Once caught up, one answer per burst of messages: none while more are pending.
		ready := err == nil && f.seq > emitted && md.NumPending == 0
		if ready {
			a, err = f.snapshot()
		}
		f.mu.Unlock()
		if err != nil {
			return fmt.Errorf("follow %s: message %d: %w", id, md.Sequence.Stream, err)
		}
		if !ready {
			continue
		}
		if err := emit(a); err != nil || a.status.Terminal() {
			return err
		}
		emitted = a.seq
	}
}

// watchers bounds the requests that follow an execution at once.
type watchers chan struct{}

// errTooManyWatchers: every watcher slot is taken.
var errTooManyWatchers = errors.New("too many watchers")

func (w watchers) acquire() (release func(), err error) {
	select {
	case w <- struct{}{}:
		return func() { <-w }, nil
	default:
		return nil, fmt.Errorf("%w: %d requests follow executions already, the most this memmie serves at once (api.Config.MaxWatchers): try again in a moment, or GET /v1/executions/{id} without ?wait", errTooManyWatchers, cap(w))
	}
}
