package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the reconciler's component name and the role of its lease.
const Name = "reconciler"

// Defaults of Config.
const (
	DefaultInterval    = time.Minute
	DefaultGrace       = 30 * time.Second
	DefaultPassTimeout = 5 * time.Minute
)

// Config configures a Reconciler.
type Config struct {
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Inbox is the stream of commands. Defaults to streams.Inbox.
	Inbox string
	// Interval is the time between two passes; one runs at Start, and one whenever this
	// process becomes the leader. Defaults to DefaultInterval.
	Interval time.Duration
	// Grace is how long past its due time a timer (a retry backoff, a run's deadline) may
	// stay unfired, and an attempt stay unreported past its deadline, before the reconciler
	// fires it (the attempt's timeout). It also spares executions whose last event is
	// younger than it: they are moving. Keep it above the time the timers handler and the
	// orchestrator take under load, and above the runner's AckWait (after which a crashed
	// runner's attempt is taken up and its timeout reported), so that nothing is sent twice
	// (harmless, but noise). Defaults to DefaultGrace.
	Grace time.Duration
	// PassTimeout bounds one pass. Defaults to DefaultPassTimeout.
	PassTimeout time.Duration
	// Leader, when set, says whether this process reconciles: with several processes, only
	// the holder of the reconciler's lease does. Defaults to nil: this reconciler always
	// does.
	Leader Leader
	// Now is the clock, compared with the stream's timestamps. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span (reconciler.reissue) for each timer re-issued, joined to the
	// trace of the execution's queued event when it carries one. Defaults to off.
	Tracer tracing.Tracer
}

func (c *Config) defaults() error {
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Inbox = cmp.Or(c.Inbox, streams.Inbox)
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Grace = cmp.Or(c.Grace, DefaultGrace)
	c.PassTimeout = cmp.Or(c.PassTimeout, DefaultPassTimeout)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("reconciler: Interval %s is under 10ms", c.Interval)
	case c.Grace < 10*time.Millisecond:
		return fmt.Errorf("reconciler: Grace %s is under 10ms", c.Grace)
	case c.PassTimeout < time.Second:
		return fmt.Errorf("reconciler: PassTimeout %s is under a second", c.PassTimeout)
	}
	return nil
}

// Leader is a leader lease; *lease.Lease is one.
type Leader interface {
	// Held reports whether this process leads now.
	Held() bool
	// Changes receives a value when leadership may have changed.
	Changes() <-chan struct{}
}

// Lifecycle are the subjects that open and close an execution, which the reconciler follows
// to know the executions that have not ended.
var Lifecycle = []string{
	"memmie.executions.*.queued",
	"memmie.executions.*.requeued",
	"memmie.executions.*.completed",
	"memmie.executions.*.failed",
	"memmie.executions.*.cancelled",
}

// open is what the reconciler remembers of an execution that has not ended.
type open struct {
	// seq is the stream sequence of the last event seen when its history was last folded,
	// and quietUntil when the first of its timers will be overdue: until then, with no new
	// event, there is nothing to look at.
	seq        uint64
	quietUntil time.Time
	// last is its last event that follow read: what check looks at first, without a read.
	last lastEvent
}

// lastEvent is an execution's last event as follow read it.
type lastEvent struct {
	seq  uint64
	typ  events.Type
	time time.Time
}

// Reconciler re-issues the timers that executions wait for and that never fired (see the
// package documentation).
type Reconciler struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	mu     sync.Mutex // one pass at a time; guards what follows
	cursor uint64     // the last stream sequence of Lifecycle read
	open   map[string]*open
	inbox  jetstream.Stream

	life lifecycle.Service

	passes, checked, loaded, reissued atomic.Uint64
}

// New checks cfg and returns a reconciler. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Reconciler, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Reconciler{js: js, cfg: cfg, log: cfg.Logger.With("component", Name), open: map[string]*open{},
		life: lifecycle.Service{Name: Name}}, nil
}

// Start starts the passes: the first at once (in the background), then every Interval.
func (r *Reconciler) Start(ctx context.Context) error { return r.life.Start(ctx, nil, r.run) }

// Stop stops the passes; one in progress is cut short. It waits for it until ctx ends.
func (r *Reconciler) Stop(ctx context.Context) error { return r.life.Stop(ctx, nil) }

func (r *Reconciler) run(ctx context.Context, stop <-chan struct{}) {
	// A pass is idempotent: a stop cuts it short rather than waiting for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	var changes <-chan struct{}
	if r.cfg.Leader != nil {
		changes = r.cfg.Leader.Changes()
	}
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		if r.cfg.Leader == nil || r.cfg.Leader.Held() {
			pctx, cancel := context.WithTimeout(ctx, r.cfg.PassTimeout)
			if _, err := r.Pass(pctx); err != nil && ctx.Err() == nil {
				r.log.Warn("reconcile pass failed; trying again at the next", "err", err)
			}
			cancel()
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

// PassStats counts what one pass did.
type PassStats struct {
	// Lifecycle counts the lifecycle events read (all of them on the first pass, the new
	// ones on later passes).
	Lifecycle int
	// Open counts the executions that have not ended.
	Open int
	// Checked counts the executions whose last event was read.
	Checked int
	// Loaded counts the histories read and folded: executions that looked stuck.
	Loaded int
	// Reissued counts the timers fired again.
	Reissued int
}

// Pass reconciles once: it reads the lifecycle events since the last pass, then looks at each
// execution that has not ended, and fires its overdue timers. Start runs it periodically;
// tests call it directly. Passes run one at a time.
func (r *Reconciler) Pass(ctx context.Context) (PassStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps PassStats
	n, err := r.follow(ctx)
	ps.Lifecycle = n
	if err != nil {
		return ps, err
	}
	r.passes.Add(1)
	ids := make([]string, 0, len(r.open))
	for id := range r.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ps.Open = len(ids)
	for _, id := range ids {
		if ctx.Err() != nil {
			return ps, ctx.Err()
		}
		if err := r.check(ctx, id, &ps); err != nil {
			r.log.Warn("reconcile execution", "execution_id", id, "err", err)
		}
	}
	if ps.Reissued > 0 {
		r.log.Info("reconcile pass", "open", ps.Open, "checked", ps.Checked, "loaded", ps.Loaded, "reissued", ps.Reissued)
	} else {
		r.log.Debug("reconcile pass", "open", ps.Open, "checked", ps.Checked, "loaded", ps.Loaded)
	}
	return ps, nil
}

// follow reads the lifecycle events stored after the cursor and updates the open executions.
// It reads them with an ordered consumer, deleted when done: a pass costs the new lifecycle
// events, not the executions that ended before.
func (r *Reconciler) follow(ctx context.Context) (int, error) {
	// Every event, headers only, and the lifecycle ones picked out here: the server walks a
	// stream-wide filter linearly, whereas a filter of several subjects read from behind
	// costs it a walk of every subject of the block per message delivered (nats-server 2.15,
	// msgBlock.firstMatchingMulti): seconds of CPU a pass under sustained load.
	cons, err := r.js.OrderedConsumer(ctx, r.cfg.Executions, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.SubjectExecutions},
		HeadersOnly:       true,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.cursor + 1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, fmt.Errorf("reconciler: follow %s: %w", r.cfg.Executions, err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = r.js.DeleteConsumer(dctx, r.cfg.Executions, info.Name)
			cancel()
		}
	}()
	it, err := cons.Messages(jetstream.PullExpiry(2 * time.Second))
	if err != nil {
		return 0, fmt.Errorf("reconciler: follow %s: %w", r.cfg.Executions, err)
	}
	defer it.Stop()
	if info := cons.CachedInfo(); info == nil || info.NumPending == 0 {
		return 0, nil
	}
	n := 0
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return n, fmt.Errorf("reconciler: follow %s: %w", r.cfg.Executions, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return n, fmt.Errorf("reconciler: follow %s: %w", r.cfg.Executions, err)
		}
		r.cursor = md.Sequence.Stream
		if id, tail, err := events.ParseExecutionSubject(msg.Subject()); err == nil {
			t, _ := events.TypeOfTail(tail)
			switch t {
			case events.TypeExecutionQueued, events.TypeExecutionRequeued:
				n++
				if r.open[id] == nil {
					r.open[id] = &open{}
				}
			case events.TypeExecutionCompleted, events.TypeExecutionFailed, events.TypeExecutionCancelled:
				// Ended. A failed one that is retried comes back with requeued.
				n++
				delete(r.open, id)
			}
			if o := r.open[id]; o != nil {
				o.last = lastEvent{seq: md.Sequence.Stream, typ: t, time: md.Timestamp}
			}
		}
		if md.NumPending == 0 {
			return n, nil
		}
	}
}

// check looks at one execution, from the cheapest reads to the dearest: its last event as
// follow read it (no read: a pass over many queued executions costs no read each), the
// commands waiting for it in the inbox, and only then its history.
func (r *Reconciler) check(ctx context.Context, id string, ps *PassStats) error {
	o := r.open[id]
	ps.Checked++
	r.checked.Add(1)
	now, last := r.cfg.Now(), o.last
	switch last.typ {
	case events.TypeExecutionQueued, events.TypeExecutionRequeued:
		// Waiting for the dispatcher, which sends a lost start again (its ResendAfter).
		return nil
	}
	switch {
	case now.Sub(last.time) < r.cfg.Grace:
		return nil // it moves
	case last.seq <= o.seq && now.Before(o.quietUntil):
		return nil // nothing new, and nothing overdue yet
	}
	waiting, err := r.commandWaits(ctx, id)
	if err != nil {
		return err
	}
	if waiting {
		// The orchestrator has not taken it up yet (a backlog, a partition moving): it is
		// not lost.
		return nil
	}

	ps.Loaded++
	r.loaded.Add(1)
	msgs, err := stream.Load(ctx, r.js, r.cfg.Executions, events.ExecutionFilter(id))
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		delete(r.open, id) // its history is gone (deleted by an operator)
		return nil
	}
	history := make([]events.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		if err != nil {
			return fmt.Errorf("history of %s: message %d: %w", id, m.Sequence, err)
		}
		history = append(history, ev)
	}
	s, err := execution.Fold(history)
	if err != nil {
		return fmt.Errorf("history of %s: %w", id, err)
	}
	o.seq, o.quietUntil = msgs[len(msgs)-1].Sequence, time.Time{}
	log := r.log.With("execution_id", id, "workflow_id", s.WorkflowID)
	for _, tm := range timersOf(s.Pending()) {
		if tm.At.IsZero() {
			continue // a timer with no time is never set
		}
		overdue := now.Sub(tm.At)
		if overdue < r.cfg.Grace {
			if q := tm.At.Add(r.cfg.Grace); o.quietUntil.IsZero() || q.Before(o.quietUntil) {
				o.quietUntil = q
			}
			continue
		}
		if err := r.traced(ctx, msgs[0].Header, s.WorkflowID, tm.Fire); err != nil {
			return err
		}
		ps.Reissued++
		r.reissued.Add(1)
		d := tm.Fire.Data.(*events.TimerFired)
		log.Info("timer re-issued", "timer", d.Kind, "run", d.Run, "step_id", d.StepID, "attempt", d.Attempt,
			"due", tm.At, "overdue", overdue.Round(time.Millisecond))
	}
	if o.quietUntil.IsZero() {
		// Nothing is due (a request in flight before its deadline is a due timeout):
		// look again at the next pass only if the history moved.
		o.quietUntil = now.Add(r.cfg.Interval)
	}
	return nil
}

// timersOf lists what may be overdue in what an execution waits for: its durable timers, and
// the timeout of each attempt in flight. No timer is set for an attempt's timeout (the
// runner that holds it reports it by its deadline, or AckWait after a crash), so one still
// in flight Grace past its deadline has lost its report, and its timeout is fired here.
func timersOf(p execution.Pending) []execution.Timer {
	out := p.Timers
	for _, req := range p.Requests {
		if tm, ok := req.Timeout(); ok {
			out = append(out, tm)
		}
	}
	return out
}

// commandWaits reports whether the inbox holds a command for the execution.
func (r *Reconciler) commandWaits(ctx context.Context, id string) (bool, error) {
	if r.inbox == nil {
		s, err := r.js.Stream(ctx, r.cfg.Inbox)
		if err != nil {
			return false, fmt.Errorf("inbox of %s: %w", id, err)
		}
		r.inbox = s
	}
	// The inbox has no direct gets: this asks its leader. The partition token is a wildcard
	// so that the reconciler needs not know the partitions.
	_, err := r.inbox.GetLastMsgForSubject(ctx, "memmie.inbox.*."+id)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("inbox of %s: %w", id, err)
	}
	return true, nil
}

// reissue publishes a timer's timer.fired command again. The event is the one the timers
// handler sends (same id, so the history records it once, and the core ignores it when the
// timer is no longer current), but its Nats-Msg-Id is the reconciler's own: the inbox may
// still remember the lost original's id (its duplicate window) and would drop the command.
// Passes within the window send it once.
func (r *Reconciler) reissue(ctx context.Context, fire events.Event) error {
	data, err := events.Marshal(fire)
	if err != nil {
		return err
	}
	if err := inbox.PublishData(ctx, r.js, fire.ExecutionID(), MsgID(fire.ID), data); err != nil {
		return fmt.Errorf("re-issue timer %s: %w", fire.ID, err)
	}
	return nil
}

// traced re-issues fire in a reconciler.reissue span of the trace of hdr (the execution's
// queued event), when tracing is on and hdr carries one.
func (r *Reconciler) traced(ctx context.Context, hdr nats.Header, workflowID string, fire events.Event) error {
	if !r.cfg.Tracer.On() || len(hdr[tracing.HeaderTraceparent]) == 0 {
		return r.reissue(ctx, fire)
	}
	d := fire.Data.(*events.TimerFired)
	attrs := []attribute.KeyValue{tracing.ExecutionID.String(fire.ExecutionID()), tracing.WorkflowID.String(workflowID),
		attribute.String("memmie.timer", string(d.Kind)), attribute.Int("memmie.run", d.Run)}
	if d.StepID != "" {
		attrs = append(attrs, tracing.StepID.String(d.StepID), tracing.Attempt.Int(d.Attempt))
	}
	ctx, span := r.cfg.Tracer.Start(ctx, "reconciler.reissue", hdr, trace.WithAttributes(attrs...))
	defer span.End()
	err := r.reissue(ctx, fire)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "timer not re-issued")
	}
	return err
}

// MsgID is the Nats-Msg-Id of a command the reconciler re-issues, for the event id.
func MsgID(eventID string) string { return "reconciler/" + eventID }

// Stats counts what a reconciler did since it was created.
type Stats struct {
	// Passes counts the passes done (not those cut short).
	Passes uint64 `json:"passes"`
	// Checked counts the looks at an execution that has not ended (a read of its last event).
	Checked uint64 `json:"checked"`
	// Loaded counts the histories read and folded.
	Loaded uint64 `json:"loaded"`
	// Reissued counts the timers fired again.
	Reissued uint64 `json:"reissued"`
}

// Stats returns the reconciler's counters.
func (r *Reconciler) Stats() Stats {
	return Stats{Passes: r.passes.Load(), Checked: r.checked.Load(), Loaded: r.loaded.Load(), Reissued: r.reissued.Load()}
}
