package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/consume"
	"github.com/memmie/memmie/handlers/deadletter"
	"github.com/memmie/memmie/internal/execution"
	"github.com/memmie/memmie/internal/stream"
)

// Name is the orchestrator's durable consumer name and its dead-letter source.
const Name = "orchestrator"

// Defaults of Config.
const (
	DefaultWorkers       = 16
	DefaultCacheSize     = 10_000
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 1024
	DefaultMaxConflicts  = 10
)

// Config configures an Orchestrator.
type Config struct {
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Inbox is the stream of commands. Defaults to streams.Inbox.
	Inbox string
	// Durable is the consumer's name. Defaults to Name.
	Durable string
	// Workers is how many executions advance at once; the inputs of one execution are
	// processed one at a time, in order. Defaults to DefaultWorkers.
	Workers int
	// CacheSize bounds the execution states held in memory. Defaults to DefaultCacheSize.
	CacheSize int
	// AckWait is how long the server waits for an input to be settled before delivering it
	// again. Processing an input takes one append (milliseconds); a cache miss adds a history
	// load, and the consume loop sends progress while it runs. Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the inputs delivered and not yet settled, early timers held for
	// their due time included. Defaults to DefaultMaxAckPending.
	MaxAckPending int
	// MaxConflicts bounds how often one input is decided again after conflicting appends
	// before it is handed back to the server. Defaults to DefaultMaxConflicts.
	MaxConflicts int
	// Atomic appends an input and its decisions as one atomic batch (all or none). Defaults
	// to false: a chain of publishes, each expecting the one before (stream.AppendChained).
	// Both keep other writers out; on a file stream with one replica the server syncs every
	// staged batch to disk under the stream's lock, which makes a batch some 40 times slower
	// than a chain (internal/stream's benchmarks). A chain cut short by a crash leaves the
	// input and a prefix of its decisions: the input is delivered again, finds itself applied,
	// and Decide, which decides on the state, returns the decisions still missing.
	Atomic bool
	// Now is the clock of decisions. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DeadLetter records inputs that can never be processed. Required.
	DeadLetter *deadletter.Writer
}

func (c *Config) defaults() error {
	if c.Executions == "" {
		c.Executions = streams.Executions
	}
	if c.Inbox == "" {
		c.Inbox = streams.Inbox
	}
	if c.Durable == "" {
		c.Durable = Name
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.MaxConflicts == 0 {
		c.MaxConflicts = DefaultMaxConflicts
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Workers < 0:
		return fmt.Errorf("orchestrator: Workers %d is negative", c.Workers)
	case c.CacheSize < 0:
		return fmt.Errorf("orchestrator: CacheSize %d is negative", c.CacheSize)
	case c.AckWait < time.Second:
		return fmt.Errorf("orchestrator: AckWait %s is under a second", c.AckWait)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("orchestrator: MaxAckPending %d is under Workers %d", c.MaxAckPending, c.Workers)
	case c.MaxConflicts < 0:
		return fmt.Errorf("orchestrator: MaxConflicts %d is negative", c.MaxConflicts)
	case c.DeadLetter == nil:
		return errors.New("orchestrator: DeadLetter is required")
	}
	return nil
}

// Orchestrator is the single writer of execution histories (see the package documentation).
type Orchestrator struct {
	js    jetstream.JetStream
	cfg   Config
	log   *slog.Logger
	cache *cache
	loop  *consume.Loop
}

// New checks cfg and returns an orchestrator. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Orchestrator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	o := &Orchestrator{
		js:    js,
		cfg:   cfg,
		log:   cfg.Logger.With("component", Name),
		cache: newCache(cfg.CacheSize),
	}
	loop, err := consume.New(js, consume.Config{
		Name:   Name,
		Stream: cfg.Inbox,
		Consumer: jetstream.ConsumerConfig{
			Durable:       cfg.Durable,
			Description:   "Turns commands into execution events",
			FilterSubject: events.SubjectInbox,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			// Unlimited: an early timer is held with NakWithDelay, which counts as a
			// delivery, and a command must never be dropped silently. The handler
			// dead-letters what it cannot process, and the loop dead-letters a command
			// whose processing failed 20 times (MaxFailures).
			MaxDeliver:    -1,
			MaxAckPending: cfg.MaxAckPending,
		},
		Workers: cfg.Workers,
		// The commands of one execution are decided one at a time, in order.
		Key:        func(msg jetstream.Msg) string { return msg.Subject() },
		DeadLetter: cfg.DeadLetter,
		Logger:     cfg.Logger,
	}, o.handle)
	if err != nil {
		return nil, err
	}
	o.loop = loop
	return o, nil
}

// Start starts consuming the inbox.
func (o *Orchestrator) Start(ctx context.Context) error { return o.loop.Start(ctx) }

// Stop stops consuming; inputs in progress finish (see consume.Loop.Stop).
func (o *Orchestrator) Stop(ctx context.Context) error { return o.loop.Stop(ctx) }

// errStale marks an input that its execution's state makes moot.
var errStale = errors.New("stale input")

func (o *Orchestrator) handle(ctx context.Context, d consume.Delivery) consume.Outcome {
	id, err := events.ParseInboxSubject(d.Msg.Subject())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	ev, err := events.Decode(d.Msg.Data())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	if !ev.Type.IsInput() {
		return consume.DeadLetter(fmt.Sprintf("%s is not an execution input", ev.Type))
	}
	if got := ev.ExecutionID(); got != id {
		return consume.DeadLetter(fmt.Sprintf("input of execution %q on the inbox of %q", got, id))
	}
	now := o.cfg.Now()
	if t, ok := ev.Data.(*events.TimerFired); ok && now.Before(t.DueAt) {
		// A schedule fired early (1-second granularity): wait until it is due.
		return consume.Hold(t.DueAt.Sub(now))
	}
	log := o.log.With("execution_id", id, "input", ev.Type, "event_id", ev.ID, "waited", now.Sub(d.Meta.Timestamp))
	for attempt := 1; ; attempt++ {
		out, err := o.decide(ctx, log, id, ev, now)
		if !errors.Is(err, stream.ErrConflict) {
			return out
		}
		// Another writer appended first: reload the history and decide again.
		o.cache.remove(id)
		if attempt >= o.cfg.MaxConflicts {
			return consume.Retry(fmt.Errorf("after %d conflicting appends: %w", attempt, err), 0)
		}
		log.Debug("append conflict; deciding again", "attempt", attempt)
		now = o.cfg.Now()
	}
}

// decide applies one input to the execution's state and appends it with the decisions taken
// on it. It returns a stream.ErrConflict error when another writer appended first.
func (o *Orchestrator) decide(ctx context.Context, log *slog.Logger, id string, ev events.Event, now time.Time) (consume.Outcome, error) {
	cur, cached := o.cache.get(id)
	if !cached {
		var err error
		cur, err = o.load(ctx, id, ev.Type)
		switch {
		case errors.Is(err, errStale):
			log.Debug("input dropped: the execution has ended")
			return consume.Ack(), nil
		case errors.Is(err, errUnreadable):
			return consume.DeadLetter(err.Error()), nil
		case err != nil:
			return consume.Retry(err, 0), nil
		}
	}
	if cur.seq == 0 && ev.Type != events.TypeExecutionQueued {
		return consume.DeadLetter(fmt.Sprintf("unknown execution %s", id)), nil
	}

	next := cur.state.Clone()
	in := ev
	if st, ok := ev.Data.(*events.ExecutionStarted); ok && st.Deadline.IsZero() {
		// The dispatcher asks to start a run; the deadline follows from the pinned workflow.
		if started, ok := execution.Start(&next, now); ok && started.ID == ev.ID {
			in = started
		}
	}
	wf := next.WorkflowID
	if q, ok := in.Data.(*events.ExecutionQueued); ok && wf == "" {
		wf = q.WorkflowID
	}
	log = log.With("workflow_id", wf)
	stale := next.StaleCount
	if err := next.Apply(in); err != nil {
		o.cache.remove(id)
		return consume.DeadLetter(err.Error()), nil
	}
	isStale := next.StaleCount > stale
	decisions, err := execution.Decide(next, in, now)
	if err != nil {
		log.Error("decide failed", "err", err)
		return consume.DeadLetter(err.Error()), nil
	}
	if isStale && len(decisions) == 0 {
		// A duplicate or late input (a report after a timeout, a timer of a past attempt, a
		// second cancel): the state already has what it means. Nothing to record, provided the
		// cached state is the stream's: another writer may have moved the execution on.
		if cached {
			if fresh, err := o.fresh(ctx, id, cur.seq); err != nil {
				return consume.Retry(err, 0), nil
			} else if !fresh {
				return consume.Outcome{}, fmt.Errorf("execution %s moved on: %w", id, stream.ErrConflict)
			}
		}
		log.Debug("stale input dropped", "reason", next.Stale[len(next.Stale)-1].Reason)
		return consume.Ack(), nil
	}
	batch := append([]events.Event{in}, decisions...)
	if isStale {
		// The input is recorded, but not every decision on it: an append cut short. Record
		// the rest.
		log.Info("completing the decisions of an input recorded earlier", "decisions", len(decisions))
		batch = decisions
	}
	msgs := make([]stream.Msg, 0, len(batch))
	for _, e := range batch {
		if e.ID != in.ID {
			if err := next.Apply(e); err != nil {
				log.Error("a decision does not apply to its own state", "decision", e.Type, "err", err)
				return consume.DeadLetter(fmt.Sprintf("decision %s: %v", e.Type, err)), nil
			}
		}
		data, err := events.Marshal(e)
		if err != nil {
			return consume.DeadLetter(err.Error()), nil
		}
		msgs = append(msgs, stream.Msg{Subject: e.Subject, Data: data, ID: e.ID})
	}
	appendStart := time.Now()
	appendFn := stream.AppendChained
	if o.cfg.Atomic {
		appendFn = stream.Append
	}
	ack, err := appendFn(ctx, o.js, o.cfg.Executions, msgs, stream.Expect{
		FilterSubject:  events.ExecutionFilter(id),
		LastSubjectSeq: cur.seq,
	})
	if err != nil {
		if errors.Is(err, stream.ErrConflict) {
			return consume.Outcome{}, err
		}
		// The outcome is unknown (a timeout may have landed): forget the state, so that the
		// next try starts from the stream.
		o.cache.remove(id)
		return consume.Retry(err, 0), nil
	}
	o.cache.put(id, entry{state: next, seq: ack.LastSeq})
	if log.Enabled(ctx, slog.LevelDebug) {
		types := make([]string, len(decisions))
		for i, e := range decisions {
			types[i] = string(e.Type)
		}
		log.Debug("decided", "decisions", types, "seq", ack.LastSeq, "status", next.Status, "append", time.Since(appendStart))
	}
	return consume.Ack(), nil
}

// fresh reports whether seq is still the sequence of the execution's last event.
func (o *Orchestrator) fresh(ctx context.Context, id string, seq uint64) (bool, error) {
	last, err := stream.LastBySubject(ctx, o.js, o.cfg.Executions, events.ExecutionFilter(id))
	if err != nil {
		return false, fmt.Errorf("check execution %s: %w", id, err)
	}
	return last.Sequence == seq, nil
}

// errUnreadable marks a history that cannot be folded: its inputs are dead-lettered.
var errUnreadable = errors.New("unreadable history")

// load reads an execution's state from the stream. A miss is expensive (an ordered consumer
// over the execution's subjects), so two cheap cases come first: an execution whose last
// event is its queued event has only that event, and every input but a retry request is moot
// once the execution has ended.
func (o *Orchestrator) load(ctx context.Context, id string, input events.Type) (entry, error) {
	last, err := stream.LastBySubject(ctx, o.js, o.cfg.Executions, events.ExecutionFilter(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("load execution %s: %w", id, err)
	}
	_, tail, err := events.ParseExecutionSubject(last.Subject)
	if err != nil {
		return entry{}, fmt.Errorf("%w of %s: %v", errUnreadable, id, err)
	}
	switch t, _ := events.TypeOfTail(tail); t {
	case events.TypeExecutionCompleted, events.TypeExecutionCancelled:
		return entry{}, errStale
	case events.TypeExecutionFailed:
		if input != events.TypeRetryRequested {
			return entry{}, errStale
		}
	}
	msgs := []jetstream.RawStreamMsg{*last}
	if t, _ := events.TypeOfTail(tail); t != events.TypeExecutionQueued {
		if msgs, err = stream.Load(ctx, o.js, o.cfg.Executions, events.ExecutionFilter(id)); err != nil {
			return entry{}, fmt.Errorf("load execution %s: %w", id, err)
		}
	}
	history, err := Decode(msgs)
	if err != nil {
		return entry{}, fmt.Errorf("%w of %s: %v", errUnreadable, id, err)
	}
	s, err := execution.Fold(history)
	if err != nil {
		return entry{}, fmt.Errorf("%w of %s: %v", errUnreadable, id, err)
	}
	return entry{state: s, seq: msgs[len(msgs)-1].Sequence}, nil
}

// Decode decodes the messages of an execution's history.
func Decode(msgs []jetstream.RawStreamMsg) ([]events.Event, error) {
	out := make([]events.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		if err != nil {
			return nil, fmt.Errorf("message %d (%s): %w", m.Sequence, m.Subject, err)
		}
		out = append(out, ev)
	}
	return out, nil
}
