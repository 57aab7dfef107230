package dispatcher

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
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
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the dispatcher's dead-letter source.
const Name = "dispatcher"

// Defaults of Config.
const (
	DefaultMaxRunning    = 100
	DefaultResendAfter   = 30 * time.Second
	DefaultSnapshotEvery = 30 * time.Second
)

// Config configures a Dispatcher.
type Config struct {
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Inbox is the stream of commands, read when the dispatcher takes over from another
	// leader. Defaults to streams.Inbox.
	Inbox string
	// Snapshots is the stream of the view's snapshots (SubjectSnapshots). Defaults to
	// streams.Leases.
	Snapshots string
	// SnapshotEvery is how often the leader writes a snapshot of its view, when it changed
	// (and after 5000 queue events, and when it stops): a dispatcher starts from the last
	// one and replays only the events after it. Defaults to DefaultSnapshotEvery.
	SnapshotEvery time.Duration
	// Leader, when set, says whether this process may admit executions: with several
	// processes, only the holder of the dispatcher's lease does, so that MaxRunning holds
	// across them; the others follow the stream, ready to take over. Defaults to nil: this
	// dispatcher always admits.
	Leader Leader
	// Hooks inject faults (tests only): faults.DispatcherAdmitted. Defaults to none.
	Hooks faults.Hook
	// MaxRunning bounds the executions running at once: started, and not yet completed,
	// failed, cancelled or waiting for an automatic retry. Defaults to DefaultMaxRunning.
	MaxRunning int
	// ResendAfter is how long an admitted execution may take to start before its start is
	// sent again (the first send may have been lost with a crashed process). Sending twice is
	// harmless. Defaults to DefaultResendAfter.
	ResendAfter time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span per start sent (dispatcher.start) for an execution whose queue
	// event carries a trace context (its traceparent header), joined to that trace; the start
	// command carries the span's. Defaults to off.
	Tracer tracing.Tracer
	// DeadLetter records queue events that cannot be read. Required.
	DeadLetter *deadletter.Writer
}

func (c *Config) defaults() error {
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Inbox = cmp.Or(c.Inbox, streams.Inbox)
	c.Snapshots = cmp.Or(c.Snapshots, streams.Leases)
	c.SnapshotEvery = cmp.Or(c.SnapshotEvery, DefaultSnapshotEvery)
	c.MaxRunning = cmp.Or(c.MaxRunning, DefaultMaxRunning)
	c.ResendAfter = cmp.Or(c.ResendAfter, DefaultResendAfter)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.MaxRunning < 0:
		return fmt.Errorf("dispatcher: MaxRunning %d is negative", c.MaxRunning)
	case c.ResendAfter < time.Second:
		return fmt.Errorf("dispatcher: ResendAfter %s is under a second", c.ResendAfter)
	case c.SnapshotEvery < time.Second:
		return fmt.Errorf("dispatcher: SnapshotEvery %s is under a second", c.SnapshotEvery)
	case c.DeadLetter == nil:
		return errors.New("dispatcher: DeadLetter is required")
	}
	return nil
}

// Leader is a leader lease; *lease.Lease is one.
type Leader interface {
	// Held reports whether this process leads now.
	Held() bool
	// ValidUntil returns until when this process may count on the lease, before any other
	// process can take it; zero when not held.
	ValidUntil() time.Time
	// Changes receives a value when leadership may have changed.
	Changes() <-chan struct{}
}

// Filters are the subjects the dispatcher follows: queue entries, starts, and the ends of runs.
var Filters = []string{
	"memmie.executions.*.queued",
	"memmie.executions.*.requeued",
	"memmie.executions.*.started",
	"memmie.executions.*.retry_scheduled",
	"memmie.executions.*.completed",
	"memmie.executions.*.failed",
	"memmie.executions.*.cancelled",
}

type status int

const (
	statusQueued   status = iota // in the queue
	statusStarting               // admitted: its start is sent, its started event not seen yet
	statusRunning
	statusWaiting // retry_scheduled: not running, waiting for its requeue
)

func (s status) counts() bool { return s == statusStarting || s == statusRunning }

// exec is what the dispatcher knows of an execution that is queued, running or waiting.
type exec struct {
	id       string
	priority int
	// seq is the stream sequence of the queue entry: FIFO order within a priority.
	seq    uint64
	run    int
	status status
	sentAt time.Time
	index  int // in the queue heap, -1 when not queued
	// resolving is true while the priority of a requeued run is read (resolvePriority): it
	// is queued, but not in the heap yet.
	resolving bool
	// traceparent is the trace context of its last queue event, and workflow its workflow,
	// when tracing is on.
	traceparent, workflow string
}

// Entry is one queued execution, for a view of the queue.
type Entry struct {
	ExecutionID string `json:"execution_id"`
	Priority    int    `json:"priority"`
	Run         int    `json:"run"`
	// Seq is the stream sequence of the queue entry.
	Seq uint64 `json:"seq"`
}

// Dispatcher admits queued executions by priority, keeping at most MaxRunning running.
type Dispatcher struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	queue     queue
	execs     map[string]*exec
	starting  map[string]*exec
	running   int // executions whose status counts
	applied   uint64
	caughtUp  bool
	leading   atomic.Bool
	events    int // queue events applied since Start
	inboxRead int // inbox messages read by takeovers
	startUp   StartUp
	// The executions stream's creation time, and the last snapshot written or read.
	created     time.Time
	snapApplied uint64
	snapParts   int
	snapAt      time.Time

	kick   chan struct{}
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	ctx    context.Context
	cancel context.CancelFunc
	life   lifecycle.Service
}

// New checks cfg and returns a dispatcher. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Dispatcher, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Dispatcher{life: lifecycle.Service{Name: Name}, js: js, cfg: cfg, log: cfg.Logger.With("component", Name)}, nil
}

// Start rebuilds the queue from the last snapshot and the queue events after it (from the
// first without a snapshot), and returns once it has caught up; it then follows the stream
// and admits executions until Stop.
func (d *Dispatcher) Start(ctx context.Context) error {
	return d.life.Start(ctx, d.rebuild, d.admitLoop)
}

// rebuild builds the view from the last snapshot and the queue events after it, and follows
// the stream from there.
func (d *Dispatcher) rebuild(ctx context.Context) error {
	began := time.Now()
	d.mu.Lock()
	d.queue = nil
	d.execs = map[string]*exec{}
	d.starting = map[string]*exec{}
	d.running, d.applied, d.caughtUp, d.events = 0, 0, false, 0
	d.snapApplied, d.snapParts, d.snapAt = 0, 0, d.cfg.Now()
	d.leading.Store(false)
	d.kick = make(chan struct{}, 1)
	d.ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	d.mu.Unlock()

	s, err := d.js.Stream(ctx, d.cfg.Executions)
	if err != nil {
		return fmt.Errorf("dispatcher: follow %s: %w", d.cfg.Executions, err)
	}
	info := s.CachedInfo()
	d.created = info.Created
	parts, from, err := d.loadSnapshot(ctx, info.Created, info.State.LastSeq)
	if err != nil {
		return err
	}
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects:    Filters,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if from > 1 {
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := d.js.OrderedConsumer(ctx, d.cfg.Executions, occ)
	if err != nil {
		return fmt.Errorf("dispatcher: follow %s: %w", d.cfg.Executions, err)
	}
	cc, err := cons.Consume(d.apply)
	if err != nil {
		return fmt.Errorf("dispatcher: follow %s: %w", d.cfg.Executions, err)
	}
	d.mu.Lock()
	d.cc, d.cons = cc, cons
	d.mu.Unlock()
	if err := d.catchUp(ctx, cons); err != nil {
		cc.Stop()
		d.mu.Lock()
		d.cc = nil
		d.mu.Unlock()
		return err
	}
	d.mu.Lock()
	d.startUp = StartUp{SnapshotParts: parts, Events: d.events, Took: time.Since(began)}
	d.log.Info("queue rebuilt", "queued", d.queue.Len(), "running", d.running, "max_running", d.cfg.MaxRunning,
		"snapshot_parts", parts, "events", d.events, "took", d.startUp.Took)
	d.mu.Unlock()
	return nil
}

// catchUp waits until every queue event stored when it was called is applied.
func (d *Dispatcher) catchUp(ctx context.Context, cons jetstream.Consumer) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := cons.Info(ctx)
		if err == nil && info.NumPending == 0 {
			d.mu.Lock()
			done := d.applied >= info.Delivered.Stream
			d.caughtUp = d.caughtUp || done
			d.mu.Unlock()
			if done {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dispatcher: replay %s: %w", d.cfg.Executions, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop stops following the stream and admitting.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.mu.Lock()
	cc, cancel := d.cc, d.cancel
	d.cc = nil
	d.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	err := d.life.Stop(ctx, func(ctx context.Context) error {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
		}
		if d.cfg.Leader == nil || (d.leading.Load() && d.cfg.Leader.Held()) {
			// The next dispatcher to start replays only what comes after.
			if serr := d.writeSnapshot(ctx); serr != nil {
				d.log.Warn("snapshot on stop", "err", serr)
			}
		}
		return nil
	})
	if cancel != nil {
		cancel()
	}
	return err
}

// StartUp says what the last Start read.
func (d *Dispatcher) StartUp() StartUp {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startUp
}

// Queue returns the queued executions, in the order they will be admitted.
func (d *Dispatcher) Queue() []Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Entry, 0, len(d.queue))
	for _, e := range d.queue {
		out = append(out, Entry{ExecutionID: e.id, Priority: e.priority, Run: e.run, Seq: e.seq})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority > out[j].Priority
		}
		return out[i].Seq < out[j].Seq
	})
	return out
}

// Leading reports whether this dispatcher admits executions: always without a Leader, else
// while it holds the lease and has taken over.
func (d *Dispatcher) Leading() bool { return d.leading.Load() }

// Running returns how many executions count against MaxRunning.
func (d *Dispatcher) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// apply feeds one queue event into the view.
func (d *Dispatcher) apply(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		d.log.Error("queue event without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	ev, derr := events.Decode(msg.Data())

	d.mu.Lock()
	defer d.mu.Unlock()
	if md.Sequence.Stream > d.applied {
		d.applied = md.Sequence.Stream
	}
	d.events++
	if md.NumPending == 0 {
		d.caughtUp = true
	}
	if derr != nil {
		d.poison(msg, derr)
		return
	}
	if id := d.applyEvent(ev, md.Sequence.Stream); id != "" {
		go d.resolvePriority(id)
	}
	if d.cfg.Tracer.On() {
		d.traceOf(ev, msg.Headers())
	}
	d.signal()
}

// poison records a queue event the dispatcher cannot read. During the replay it is only
// logged: it was recorded when it was first seen.
func (d *Dispatcher) poison(msg jetstream.Msg, err error) {
	if !d.caughtUp {
		d.log.Warn("unreadable queue event skipped", "subject", msg.Subject(), "err", err)
		return
	}
	d.log.Warn("unreadable queue event", "subject", msg.Subject(), "err", err)
	m := deadletter.FromJetStream(msg)
	go func() {
		if err := d.cfg.DeadLetter.RecordMessage(d.ctx, Name, m, err.Error()); err != nil {
			d.log.Error("dead-letter failed", "subject", m.Subject, "err", err)
		}
	}()
}

// traceOf keeps the trace context of a queue event, for the span of the start it leads to;
// d.mu is held.
func (d *Dispatcher) traceOf(ev events.Event, hdr nats.Header) {
	e := d.execs[ev.ExecutionID()]
	if e == nil {
		return
	}
	switch x := ev.Data.(type) {
	case *events.ExecutionQueued:
		e.workflow = x.WorkflowID
	case *events.ExecutionRequeued:
	default:
		return
	}
	if tp := tracing.Carrier(hdr).Get(tracing.HeaderTraceparent); tp != "" {
		e.traceparent = tp
	}
}

// resolvePriority reads the priority of a requeued execution from its queued event, until it
// can, and then queues the run. Only a requeued event stored before it carried the priority
// needs it, for an execution the view does not know (a manual retry of one that ended long
// ago). A failed read is retried, never dead-lettered: the event is valid, and the queued
// event is in the stream before it (a lagging replica may not have it yet).
func (d *Dispatcher) resolvePriority(id string) {
	wait := 100 * time.Millisecond
	for {
		p, err := d.priority(id)
		if err == nil {
			d.mu.Lock()
			if e := d.execs[id]; e != nil && e.resolving && e.status == statusQueued {
				e.priority, e.resolving = p, false
				heap.Push(&d.queue, e)
				d.signal()
			}
			d.mu.Unlock()
			return
		}
		d.log.Warn("read the priority of a requeued execution; trying again", "execution_id", id, "in", wait, "err", err)
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// priority reads an execution's priority from its queued event.
func (d *Dispatcher) priority(id string) (int, error) {
	subject, err := events.ExecutionSubject(id, events.TypeExecutionQueued)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	m, err := stream.LastBySubject(ctx, d.js, d.cfg.Executions, subject)
	if err != nil {
		return 0, fmt.Errorf("priority of requeued %s: %w", id, err)
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		return 0, fmt.Errorf("priority of requeued %s: %w", id, err)
	}
	q, ok := ev.Data.(*events.ExecutionQueued)
	if !ok {
		return 0, fmt.Errorf("priority of requeued %s: %s on the queued subject", id, ev.Type)
	}
	return q.Priority, nil
}

// applyEvent changes the view; d.mu is held. It returns the id of a requeued execution
// whose priority must be read (see resolvePriority), or "".
func (d *Dispatcher) applyEvent(ev events.Event, seq uint64) (resolve string) {
	switch x := ev.Data.(type) {
	case *events.ExecutionQueued:
		if _, ok := d.execs[x.ExecutionID]; ok {
			return
		}
		e := &exec{id: x.ExecutionID, priority: x.Priority, seq: seq, run: 1, status: statusQueued}
		d.execs[e.id] = e
		heap.Push(&d.queue, e)
	case *events.ExecutionRequeued:
		e := d.execs[x.ExecutionID]
		if e == nil {
			// Not known: a manual retry of an execution that ended before the view began.
			e = &exec{id: x.ExecutionID, index: -1, resolving: x.Priority == nil}
			d.execs[e.id] = e
			if e.resolving {
				resolve = e.id
			}
		}
		if x.Priority != nil {
			e.priority, e.resolving = *x.Priority, false
		}
		d.setStatus(e, statusQueued)
		e.run, e.seq = x.Run, seq
		if !e.resolving {
			heap.Push(&d.queue, e)
		}
	case *events.ExecutionStarted:
		e := d.execs[x.ExecutionID]
		if e == nil {
			e = &exec{id: x.ExecutionID, index: -1, status: statusWaiting}
			d.execs[e.id] = e
		}
		e.run = x.Run
		d.setStatus(e, statusRunning)
	case *events.ExecutionRetryScheduled:
		if e := d.execs[x.ExecutionID]; e != nil {
			d.setStatus(e, statusWaiting)
		}
	case *events.ExecutionCompleted, *events.ExecutionFailed, *events.ExecutionCancelled:
		id := ev.ExecutionID()
		if e := d.execs[id]; e != nil {
			d.setStatus(e, statusWaiting)
			delete(d.execs, id)
		}
	}
	return resolve
}

// setStatus moves an execution, keeping the queue and the running count; d.mu is held.
func (d *Dispatcher) setStatus(e *exec, s status) {
	if e.status == statusQueued && e.index >= 0 {
		heap.Remove(&d.queue, e.index)
	}
	if e.status.counts() && !s.counts() {
		d.running--
	} else if !e.status.counts() && s.counts() {
		d.running++
	}
	if s == statusStarting {
		d.starting[e.id] = e
	} else {
		delete(d.starting, e.id)
	}
	if s != statusQueued {
		e.resolving = false
	}
	e.status = s
}

func (d *Dispatcher) signal() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// admitLoop admits executions whenever the view changes, and sends again the starts that did
// not arrive.
func (d *Dispatcher) admitLoop(ctx context.Context, stop <-chan struct{}) {
	// A Stop that gives up waiting cuts the admissions in progress short.
	context.AfterFunc(ctx, d.cancel)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var changes <-chan struct{}
	if d.cfg.Leader != nil {
		changes = d.cfg.Leader.Changes()
	}
	for {
		select {
		case <-stop:
			return
		case <-d.kick:
		case <-changes:
		case <-tick.C:
		}
		if d.lead() {
			d.admit()
			if d.snapshotDue() {
				ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
				if err := d.writeSnapshot(ctx); err != nil {
					d.log.Warn("write a snapshot of the queue", "err", err)
				}
				cancel()
			}
		}
	}
}

// lead reports whether this dispatcher may admit now, taking over when it has just become the
// leader.
func (d *Dispatcher) lead() bool {
	if d.cfg.Leader == nil {
		d.leading.Store(true)
		return true
	}
	if !d.cfg.Leader.Held() {
		if d.leading.Swap(false) {
			d.log.Info("standing by: another process admits executions")
		}
		return false
	}
	if d.leading.Load() {
		return true
	}
	if err := d.takeOver(); err != nil {
		d.log.Warn("take over admissions", "err", err)
		return false
	}
	d.leading.Store(true)
	return true
}

// takeOver makes the view count the executions that the last leader admitted and that have
// not started yet: their start commands wait in the inbox. The last leader sent them before
// its lease's validity ended, so before this one held the lease (see fenced), and their
// queued events were stored before that. So: it catches up (the view has them, queued), reads
// the starts waiting for executions queued in the view, and catches up again. A start taken
// up meanwhile is in the view as started; one still waiting was read. So the running count is
// the whole system's, and MaxRunning holds across a change of leader.
func (d *Dispatcher) takeOver() error {
	ctx, cancel := d.takeOverContext()
	defer cancel()
	d.mu.Lock()
	cons := d.cons
	d.mu.Unlock()
	if err := d.catchUp(ctx, cons); err != nil {
		return err
	}
	pending, err := d.pendingStarts(ctx)
	if err != nil {
		return err
	}
	if err := d.catchUp(ctx, cons); err != nil {
		return err
	}
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	counted := 0
	for id, run := range pending {
		if e := d.execs[id]; e != nil && e.status == statusQueued && e.run == run {
			d.setStatus(e, statusStarting)
			e.sentAt = now
			counted++
		}
	}
	d.log.Info("taking over admissions", "queued", d.queue.Len(), "running", d.running,
		"admitted_by_the_last_leader", counted, "max_running", d.cfg.MaxRunning)
	return nil
}

// takeOverContext bounds a takeover by the lease's validity: one that cannot finish in time
// gives up, and the next tick tries again with a renewed lease, rather than one attempt
// waiting on a stale deadline.
func (d *Dispatcher) takeOverContext() (context.Context, context.CancelFunc) {
	if until := d.cfg.Leader.ValidUntil(); !until.IsZero() {
		return context.WithDeadline(d.ctx, until)
	}
	return context.WithTimeout(d.ctx, publishTimeout)
}

// pendingStarts returns the runs whose start command waits in the inbox, for the executions
// queued in the view: it lists the inbox's subjects (one per execution with commands waiting:
// memmie.inbox.<partition>.<execution_id>) and reads the messages of those executions only,
// not the whole inbox.
func (d *Dispatcher) pendingStarts(ctx context.Context) (map[string]int, error) {
	s, err := d.js.Stream(ctx, d.cfg.Inbox)
	if err != nil {
		return nil, fmt.Errorf("read the inbox: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectInboxPartitions))
	if err != nil {
		return nil, fmt.Errorf("read the inbox: %w", err)
	}
	type waiting struct {
		subject string
		count   uint64
	}
	var candidates []waiting
	d.mu.Lock()
	for subject, n := range info.State.Subjects {
		id := subject[strings.LastIndexByte(subject, '.')+1:]
		if e := d.execs[id]; e != nil && e.status == statusQueued {
			candidates = append(candidates, waiting{subject, n})
		}
	}
	d.mu.Unlock()
	out := map[string]int{}
	read := 0
	for _, c := range candidates {
		seq := uint64(1)
		for range c.count {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(c.subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break // taken up meanwhile: its started event is in the stream
			}
			if err != nil {
				return nil, fmt.Errorf("read the inbox on %s: %w", c.subject, err)
			}
			read++
			seq = m.Sequence + 1
			ev, err := events.Decode(m.Data)
			if err != nil {
				continue // the orchestrator dead-letters it
			}
			if st, ok := ev.Data.(*events.ExecutionStarted); ok && st.Run > out[st.ExecutionID] {
				out[st.ExecutionID] = st.Run
			}
		}
	}
	d.mu.Lock()
	d.inboxRead += read
	d.mu.Unlock()
	return out, nil
}

// InboxRead returns how many inbox messages the takeovers read.
func (d *Dispatcher) InboxRead() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inboxRead
}

func (d *Dispatcher) admit() {
	now := d.cfg.Now()
	d.mu.Lock()
	if !d.caughtUp {
		d.mu.Unlock()
		return
	}
	var send []*exec
	for d.running < d.cfg.MaxRunning && d.queue.Len() > 0 {
		e := heap.Pop(&d.queue).(*exec)
		d.setStatus(e, statusStarting)
		e.sentAt = now
		send = append(send, e)
	}
	for _, e := range d.starting {
		if now.Sub(e.sentAt) >= d.cfg.ResendAfter && !containsExec(send, e) {
			d.log.Warn("execution admitted but not started; sending its start again", "execution_id", e.id, "run", e.run)
			e.sentAt = now
			send = append(send, e)
		}
	}
	starts := make([]start, len(send))
	for i, e := range send {
		starts[i] = start{e: e, run: e.run, traceparent: e.traceparent, workflow: e.workflow}
	}
	d.mu.Unlock()

	for len(starts) > 0 {
		n := min(len(starts), sendWindow)
		if !d.send(starts[:n], now) {
			return
		}
		starts = starts[n:]
	}
}

// sendWindow bounds the starts in flight at once, well under the client's limit of pending
// async publishes (which the engine's other handlers share).
const sendWindow = 256

// send publishes the starts of one admission round, pipelined: each start goes out as an
// async publish, with its id as Nats-Msg-Id and expecting the inbox stream, as a sync
// publish would; then it waits for the acks. Each start is sent within the lease's validity
// (the fence is checked before each one). A start whose publish fails, whose ack is an error
// or does not come in time goes back to the queue, to be sent again: until its ack, it
// counts as running (admitted) but is not taken as sent. It returns false when the round
// must stop: the lease ran out, the dispatcher stops, or a fault hook crashed it.
func (d *Dispatcher) send(starts []start, now time.Time) bool {
	// The acks are awaited until the first start's fence: a later one only extends it.
	var ctx context.Context
	futures := make([]jetstream.PubAckFuture, len(starts))
	var spans []trace.Span // when tracing
	if d.cfg.Tracer.On() {
		spans = make([]trace.Span, len(starts))
		defer func() {
			for _, span := range spans {
				if span != nil {
					span.End() // not awaited: the round stopped
				}
			}
		}()
	}
	lost := false
	for i, s := range starts {
		if err := d.cfg.Hooks.At(d.ctx, faults.DispatcherAdmitted, s.e.id); err != nil {
			return false
		}
		until, ok := d.fence()
		if !ok {
			d.leaveToNextLeader(starts[i:])
			starts, lost = starts[:i], true
			break
		}
		if ctx == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(d.ctx, until)
			defer cancel()
		}
		var hdr nats.Header
		if spans != nil && s.traceparent != "" {
			var sctx context.Context
			sctx, spans[i] = d.cfg.Tracer.Start(d.ctx, "dispatcher.start", nats.Header{tracing.HeaderTraceparent: {s.traceparent}},
				trace.WithAttributes(tracing.ExecutionID.String(s.e.id), tracing.WorkflowID.String(s.workflow), attribute.Int("memmie.run", s.run)))
			hdr = tracing.Inject(sctx, nil)
		}
		f, err := d.publishStart(s, now, hdr)
		if err != nil {
			d.log.Warn("send start; back to the queue", "execution_id", s.e.id, "err", err)
			d.requeue([]start{s})
			endSpan(spans, i, err)
			continue
		}
		futures[i] = f
	}
	if ctx == nil {
		return false
	}
	for i, f := range futures[:len(starts)] {
		if f == nil {
			continue
		}
		var err error
		select {
		case <-f.Ok():
			d.log.Debug("execution admitted", "execution_id", starts[i].e.id, "run", starts[i].run)
			endSpan(spans, i, nil)
			continue
		case err = <-f.Err():
			d.log.Warn("send start; back to the queue", "execution_id", starts[i].e.id, "err", err)
		case <-ctx.Done():
			err = ctx.Err()
			d.log.Warn("send start: no ack in time; back to the queue", "execution_id", starts[i].e.id, "err", err)
		}
		d.requeue(starts[i : i+1])
		endSpan(spans, i, err)
	}
	return !lost && ctx.Err() == nil
}

// leaveToNextLeader puts starts not sent back in the queue when the lease ran out meanwhile:
// the next leader admits the rest from its own view (it counts the starts already sent: they
// are in the inbox).
func (d *Dispatcher) leaveToNextLeader(starts []start) {
	d.log.Info("lease lost while admitting; leaving the rest to the next leader", "not_sent", len(starts))
	d.requeue(starts)
}

// endSpan ends the span of the i-th start, if any, with its error.
func endSpan(spans []trace.Span, i int, err error) {
	if spans == nil || spans[i] == nil {
		return
	}
	if err != nil {
		spans[i].RecordError(err)
		spans[i].SetStatus(codes.Error, "start not sent")
	}
	spans[i].End()
	spans[i] = nil
}

// publishStart sends a start command to the execution's inbox as an async publish, with the
// extra headers hdr (a trace context), if any.
func (d *Dispatcher) publishStart(s start, now time.Time, hdr nats.Header) (jetstream.PubAckFuture, error) {
	ev := events.NewExecution(&events.ExecutionStarted{ExecutionID: s.e.id, Run: s.run}, events.SourceDispatcher, now)
	data, err := events.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if err := events.ValidToken(s.e.id); err != nil {
		return nil, fmt.Errorf("start of %q: execution id: %w", s.e.id, err)
	}
	msg := nats.NewMsg(events.InboxSubject(s.e.id))
	msg.Data = data
	msg.Header = tracing.Copy(msg.Header, hdr)
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return d.js.PublishMsgAsync(msg, jetstream.WithExpectStream(streams.Inbox))
}

// start is one start command to send: an admitted execution and its run (and, when tracing,
// the trace context and workflow of its queue event).
type start struct {
	e                     *exec
	run                   int
	traceparent, workflow string
}

// requeue puts admitted executions whose start was not sent back in the queue.
func (d *Dispatcher) requeue(starts []start) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range starts {
		if s.e.status == statusStarting && s.e.run == s.run {
			d.setStatus(s.e, statusQueued)
			heap.Push(&d.queue, s.e)
		}
	}
}

// publishTimeout bounds the publishes of a round of a dispatcher without a Leader.
const publishTimeout = 10 * time.Second

// fence returns until when this dispatcher may publish starts. A leader's ends when its
// lease's validity does, which is before any other process can take the lease: so a leader
// whose lease lapsed (renewals failed, a pause) does not admit past it, when the next leader
// may already count what is in the inbox. ok is false when the lease is not held, or when the
// connection is down: a publish then would wait in the client's reconnect buffer and leave
// after the lease ended.
func (d *Dispatcher) fence() (until time.Time, ok bool) {
	if d.cfg.Leader == nil {
		return time.Now().Add(publishTimeout), true
	}
	until = d.cfg.Leader.ValidUntil()
	if !d.cfg.Leader.Held() || !time.Now().Before(until) || !d.js.Conn().IsConnected() {
		return time.Time{}, false
	}
	return until, true
}

func containsExec(list []*exec, e *exec) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

// queue is a heap of queued executions: higher priority first, then lower sequence.
type queue []*exec

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].priority != q[j].priority {
		return q[i].priority > q[j].priority
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	e := x.(*exec)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}
