package orchestrator

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
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/partition"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the orchestrator's dead-letter source, and the prefix of its durable consumers'
// names: orchestrator-<partition>.
const Name = "orchestrator"

// PriorityGroup is the priority group of the partition consumers, whose policy pins each
// consumer to one client at a time.
const PriorityGroup = "orchestrator"

// Defaults of Config.
const (
	DefaultWorkers       = 16
	DefaultCacheSize     = 10_000
	DefaultWorkflowCache = 1_000
	DefaultAckWait       = 5 * time.Second
	DefaultMaxAckPending = 1024
	DefaultMaxConflicts  = 10
	DefaultPinnedTTL     = 5 * time.Second
	DefaultLoadTimeout   = 10 * time.Second
)

// Config configures an Orchestrator.
type Config struct {
	// Executions is the stream of execution events. Defaults to streams.Executions.
	Executions string
	// Inbox is the stream of commands. Defaults to streams.Inbox.
	Inbox string
	// Durable prefixes the names of the partition consumers: <Durable>-<partition>. Defaults
	// to Name.
	Durable string
	// Partitions is the number of inbox partitions (streams.InboxPartitions of the inbox's
	// options); Assign takes partitions below it. Defaults to streams.DefaultPartitions.
	Partitions int
	// PinnedTTL is how long a partition consumer stays pinned to a client that stopped
	// pulling (a crashed process) before another client gets its commands. Defaults to
	// DefaultPinnedTTL.
	PinnedTTL time.Duration
	// Workers is how many executions advance at once; the inputs of one execution are
	// processed one at a time, in order. Defaults to DefaultWorkers.
	Workers int
	// CacheSize bounds the execution states held in memory. Defaults to DefaultCacheSize.
	CacheSize int
	// Seeds bounds the queued events held for the first inputs of their executions (Seed).
	// Defaults to DefaultSeeds.
	Seeds int
	// WorkflowCache bounds the compiled workflow revisions held in memory, which the
	// executions of a revision share rather than each compiling its own. Defaults to
	// DefaultWorkflowCache.
	WorkflowCache int
	// AckWait is how long the server waits for an input to be settled before delivering it
	// again: how soon the inputs a crashed process held are taken up (once its partition's pin
	// has expired). Processing an input takes one append (milliseconds); a cache miss adds a
	// history load, and the consume loop sends progress for every input it holds, so a short
	// AckWait does not redeliver work in progress. Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the inputs delivered and not yet settled, early timers held for
	// their due time included. Defaults to DefaultMaxAckPending.
	MaxAckPending int
	// MaxConflicts bounds how often one input is decided again after conflicting appends
	// before it is handed back to the server. Defaults to DefaultMaxConflicts.
	MaxConflicts int
	// LoadTimeout bounds the read of one history. A read that takes longer (its consumer
	// lost in a restart of the server) is given up and the input tried again, rather than
	// holding its worker, and the partitions whose inputs wait for that worker, meanwhile.
	// Defaults to DefaultLoadTimeout.
	LoadTimeout time.Duration
	// Atomic appends an input and its decisions as one atomic batch (all or none). Defaults
	// to false: a chain of publishes, each expecting the one before (stream.AppendChained).
	// Both keep other writers out; on a file stream with one replica the server syncs every
	// staged batch to disk under the stream's lock, which makes a batch some 40 times slower
	// than a chain (internal/jetstream/stream's benchmarks). A chain cut short by a crash leaves the
	// input and a prefix of its decisions: the input is delivered again, finds itself applied,
	// and Decide, which decides on the state, returns the decisions still missing.
	Atomic bool
	// Now is the clock of decisions. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span per input of an execution whose queued event carries a trace
	// context, and puts that trace on the events it appends (the runner's calls and the
	// deltas join it). Defaults to off.
	Tracer tracing.Tracer
	// DeadLetter records inputs that can never be processed. Required.
	DeadLetter *deadletter.Writer
	// Hooks inject faults (tests only): faults.OrchestratorDecided and
	// faults.OrchestratorAppended. Defaults to none.
	Hooks faults.Hook
	// RetryBackoff and MaxRetryBackoff pace the retries of an input whose load or append
	// failed (an unavailable stream): it is retried for as long as that lasts. Default to
	// consume.DefaultRetryBackoff and consume.DefaultMaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Observer, when set, is told of the ends it records (for metrics). Defaults to none.
	Observer Observer
}

// Observer is told of what the orchestrator recorded. It is called on the orchestrator's
// workers, once the append is acknowledged, and must return at once.
type Observer interface {
	// Ended: the orchestrator recorded the end of an execution (completed, failed or
	// cancelled). s is the state after it; shared, never modify it. Each end is recorded by
	// one append in the whole cluster, so it is told at most once: never again for an input
	// delivered a second time, and not at all when the process stops between the append and
	// the call.
	Ended(s *execution.State)
}

func (c *Config) defaults() error {
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Inbox = cmp.Or(c.Inbox, streams.Inbox)
	c.Durable = cmp.Or(c.Durable, Name)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.CacheSize = cmp.Or(c.CacheSize, DefaultCacheSize)
	c.WorkflowCache = cmp.Or(c.WorkflowCache, DefaultWorkflowCache)
	c.Seeds = cmp.Or(c.Seeds, DefaultSeeds)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.MaxConflicts = cmp.Or(c.MaxConflicts, DefaultMaxConflicts)
	c.Partitions = cmp.Or(c.Partitions, streams.DefaultPartitions)
	c.LoadTimeout = cmp.Or(c.LoadTimeout, DefaultLoadTimeout)
	c.PinnedTTL = cmp.Or(c.PinnedTTL, DefaultPinnedTTL)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.Workers < 0:
		return fmt.Errorf("orchestrator: Workers %d is negative", c.Workers)
	case c.CacheSize < 0:
		return fmt.Errorf("orchestrator: CacheSize %d is negative", c.CacheSize)
	case c.WorkflowCache < 0:
		return fmt.Errorf("orchestrator: WorkflowCache %d is negative", c.WorkflowCache)
	case c.Seeds < 0:
		return fmt.Errorf("orchestrator: Seeds %d is negative", c.Seeds)
	case c.AckWait < time.Second:
		return fmt.Errorf("orchestrator: AckWait %s is under a second", c.AckWait)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("orchestrator: MaxAckPending %d is under Workers %d", c.MaxAckPending, c.Workers)
	case c.MaxConflicts < 0:
		return fmt.Errorf("orchestrator: MaxConflicts %d is negative", c.MaxConflicts)
	case c.Partitions < 0 || c.Partitions > streams.MaxPartitions:
		return fmt.Errorf("orchestrator: Partitions %d is not within 1 to %d", c.Partitions, streams.MaxPartitions)
	case c.LoadTimeout < time.Second:
		return fmt.Errorf("orchestrator: LoadTimeout %s is under a second", c.LoadTimeout)
	case c.PinnedTTL < 2*time.Second:
		// Pulls renew the pin; they expire after at least a second.
		return fmt.Errorf("orchestrator: PinnedTTL %s is under 2 seconds", c.PinnedTTL)
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
	// compiled holds the compiled workflows the states share.
	compiled *compiled
	loop     *consume.Loop
	parts    *partition.Set
	// locks serialize the inputs of one execution (see lock).
	locks [lockStripes]sync.Mutex
	// local are the partitions Record and Seed take; stopping turns both away.
	local    localParts
	stopping atomic.Bool
	seeds    seeds
	// waiting are the inbox inputs handed back to be tried again, by execution: Record
	// turns away that execution's reports until they are settled (see waiting).
	waiting waiting

	decided, conflicts, hits, misses, loads, seeded, handedOver atomic.Uint64
}

// New checks cfg and returns an orchestrator. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Orchestrator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	o := &Orchestrator{
		js:       js,
		cfg:      cfg,
		log:      cfg.Logger.With("component", Name),
		cache:    newCache(cfg.CacheSize),
		compiled: newCompiled(cfg.WorkflowCache),
		local:    localParts{on: make([]bool, cfg.Partitions)},
		seeds:    seeds{size: cfg.Seeds, items: map[string]seed{}},
		waiting:  waiting{items: map[string]map[uint64]struct{}{}},
	}
	loop, err := consume.New(js, consume.Config{
		Name:    Name,
		Stream:  cfg.Inbox,
		Workers: cfg.Workers,
		// The commands of one execution are decided one at a time, in order.
		Key: func(msg jetstream.Msg) string { return msg.Subject() },
		// A pinned client renews its pin with each pull request: the loop's
		// (consume.DefaultPullWait) come well within PinnedTTL.
		RetryBackoff:    cfg.RetryBackoff,
		MaxRetryBackoff: cfg.MaxRetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		Logger:          cfg.Logger,
	}, o.handle)
	if err != nil {
		return nil, err
	}
	o.loop = loop
	o.parts, err = partition.New(js, partition.Config{
		Name:       Name,
		Stream:     cfg.Inbox,
		Loop:       loop,
		Durable:    cfg.Durable,
		Consumer:   o.consumerConfig,
		Group:      PriorityGroup,
		PinnedTTL:  cfg.PinnedTTL,
		Partitions: cfg.Partitions,
		// Another process advances these executions now: should the partition come back,
		// their states are read again rather than found stale by a conflict.
		OnRemoved: func(p int) {
			o.cache.removePartition(p)
			o.seeds.removePartition(p)
			o.waiting.removePartition(p, o.partitionOf)
		},
		Logger: o.log,
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Start starts the workers. They get commands once Assign gives them partitions.
func (o *Orchestrator) Start(ctx context.Context) error {
	o.stopping.Store(false)
	return o.loop.Start(ctx)
}

// Stop stops consuming; inputs in progress finish (see consume.Loop.Stop). Then it unpins its
// partitions, so that the processes that take them over get their commands at once.
// An Assign in progress is cut short and waited for before the partitions stop (see
// partition.Set.Stop).
// Record and Seed turn inputs away from the start of Stop; Stop waits for the Records in
// progress.
func (o *Orchestrator) Stop(ctx context.Context) error {
	o.stopping.Store(true)
	o.local.set(func(on []bool) { clear(on) })
	return o.parts.Stop(ctx)
}

// ConsumerName returns the durable name of a partition's consumer.
func (o *Orchestrator) ConsumerName(partition int) string { return o.parts.ConsumerName(partition) }

// consumerConfig is the durable consumer of one inbox partition. It is pinned to one client
// at a time, the process the partition is assigned to (package partition): a process that
// still drains it, or a crashed one whose pin has not expired, keeps the others waiting, so
// that two processes never interleave one execution's commands.
func (o *Orchestrator) consumerConfig(partition int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Description:   "Turns the commands of one inbox partition into execution events",
		FilterSubject: streams.InboxPartitionFilter(partition),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.cfg.AckWait,
		// Unlimited: an early timer is held with NakWithDelay, which counts as a delivery,
		// and a command must never be dropped silently, nor one that failed for a
		// transient reason, which the loop retries for as long as it takes. The handler
		// dead-letters what it can never process.
		MaxDeliver:    -1,
		MaxAckPending: o.cfg.MaxAckPending,
	}
}

// Assign makes the orchestrator consume exactly the given inbox partitions: it stops
// consuming (drains, then unpins) those it no longer has, then starts on the new ones. The
// engine calls it whenever the live processes change (see package lease). Calls are
// serialized; a partition that fails to start is left out, and the next call tries again (see
// partition.Set.Assign).
//
// Record takes the inputs of a partition while it is consumed here: a partition given up is
// taken off before it is drained (Records in progress on it are waited for), one taken up once
// its consumer runs.
func (o *Orchestrator) Assign(ctx context.Context, partitions []int) error {
	o.local.set(func(on []bool) {
		for p := range on {
			on[p] = on[p] && slices.Contains(partitions, p)
		}
	})
	err := o.parts.Assign(ctx, partitions)
	now := o.parts.Partitions()
	o.local.set(func(on []bool) {
		clear(on)
		if o.stopping.Load() {
			return
		}
		for _, p := range now {
			on[p] = true
		}
	})
	return err
}

// Stats counts what an orchestrator did since it was created.
type Stats struct {
	// Decided counts the commands recorded with their decisions.
	Decided uint64 `json:"decided"`
	// Conflicts counts appends refused because another writer had appended first (the
	// optimistic-concurrency guard at work: two processes on one execution).
	Conflicts uint64 `json:"conflicts"`
	// CacheHits and CacheMisses count the commands whose execution state was, or was not,
	// in the cache.
	CacheHits   uint64 `json:"cache_hits"`
	CacheMisses uint64 `json:"cache_misses"`
	// HistoryLoads counts the reads of a whole history (a miss on an execution past its
	// queued event).
	HistoryLoads uint64 `json:"history_loads"`
	// Seeded counts the misses whose state was the queued event this process had appended
	// (Seed), with no read of the stream; they count as misses too.
	Seeded uint64 `json:"seeded"`
	// HandedOver counts the inputs made in this process (step reports) that Record took
	// without the inbox: recorded, or found stale.
	HandedOver uint64 `json:"handed_over"`
	// Partitions are the inbox partitions consumed now.
	Partitions []int `json:"partitions"`
}

// LoopStats returns the counters of the orchestrator's consume loop: inputs handled,
// retried after a transient failure, dead-lettered, and handler panics.
func (o *Orchestrator) LoopStats() consume.Stats { return o.loop.Stats() }

// Stats returns the orchestrator's counters.
func (o *Orchestrator) Stats() Stats {
	return Stats{
		Decided:      o.decided.Load(),
		Conflicts:    o.conflicts.Load(),
		CacheHits:    o.hits.Load(),
		CacheMisses:  o.misses.Load(),
		HistoryLoads: o.loads.Load(),
		Seeded:       o.seeded.Load(),
		HandedOver:   o.handedOver.Load(),
		Partitions:   o.parts.Partitions(),
	}
}

// errStale marks an input that its execution's state makes moot.
var errStale = errors.New("stale input")

func (o *Orchestrator) handle(ctx context.Context, d consume.Delivery) consume.Outcome {
	partition, id, err := streams.ParseInboxPartitionSubject(d.Msg.Subject())
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
	log := inputLog{base: o.log, executionID: id, input: ev.Type, eventID: ev.ID, waited: now.Sub(d.Meta.Timestamp)}
	out := o.run(ctx, log, partition, id, ev, d.Msg.Headers(), now)
	// An input handed back waits on the inbox, and the reports of the same execution made
	// here must not overtake it through Record.
	o.waiting.set(id, d.Meta.Sequence.Stream, out.kind == retried || out.kind == abandoned)
	return out.consume()
}

// outcomeKind is what deciding on one input came to.
type outcomeKind int

const (
	recorded     outcomeKind = iota // appended with its decisions
	dropped                         // stale: nothing to record
	deadLettered                    // can never be processed
	retried                         // failed for a reason that passes
	abandoned                       // an injected crash
)

// outcome is what deciding on one input came to: handle makes it the consume loop's
// outcome, Record an error.
type outcome struct {
	kind   outcomeKind
	reason string // deadLettered
	err    error  // retried
}

func (out outcome) consume() consume.Outcome {
	switch out.kind {
	case deadLettered:
		return consume.DeadLetter(out.reason)
	case retried:
		return consume.Retry(out.err, 0)
	case abandoned:
		return consume.Abandon()
	}
	return consume.Ack()
}

func deadLetter(reason string) outcome { return outcome{kind: deadLettered, reason: reason} }
func retry(err error) outcome          { return outcome{kind: retried, err: err} }

// run decides on one input under its execution's lock, deciding again on the reloaded
// history while another writer appends first, up to Config.MaxConflicts times.
func (o *Orchestrator) run(ctx context.Context, log inputLog, partition int, id string, ev events.Event, inHdr nats.Header, now time.Time) outcome {
	mu := o.lock(id)
	mu.Lock()
	defer mu.Unlock()
	for attempt := 1; ; attempt++ {
		out, err := o.decide(ctx, log, partition, id, ev, inHdr, now)
		if !errors.Is(err, stream.ErrConflict) {
			return out
		}
		// Another writer appended first: reload the history and decide again.
		o.conflicts.Add(1)
		o.cache.remove(id)
		if attempt >= o.cfg.MaxConflicts {
			return retry(fmt.Errorf("after %d conflicting appends: %w", attempt, err))
		}
		log.debug(ctx, "append conflict; deciding again", "attempt", attempt)
		now = o.cfg.Now()
	}
}

// errSeedMoved: a seeded state (Seed) is not the execution's; read the history.
var errSeedMoved = fmt.Errorf("the queued event is not the execution's last: %w", stream.ErrConflict)

// decide applies one input to the execution's state and appends it with the decisions taken
// on it. It returns a stream.ErrConflict error when another writer appended first.
func (o *Orchestrator) decide(ctx context.Context, log inputLog, partition int, id string, ev events.Event, inHdr nats.Header, now time.Time) (outcome, error) {
	cur, cached := o.cache.get(id)
	seeded := false
	if cached {
		o.hits.Add(1)
	} else {
		o.misses.Add(1)
		if sd, ok := o.seeds.take(id); ok {
			var err error
			if cur, err = o.fromSeed(id, sd); err == nil {
				seeded = true
				o.seeded.Add(1)
			} else {
				log.logger().WarnContext(ctx, "seed dropped; reading the history", "err", err)
			}
		}
	}
	if !cached && !seeded {
		var err error
		cur, err = o.load(ctx, id, ev.Type)
		switch {
		case errors.Is(err, errStale):
			log.debug(ctx, "input dropped: the execution has ended")
			return outcome{kind: dropped}, nil
		case errors.Is(err, errUnreadable):
			return deadLetter(err.Error()), nil
		case err != nil:
			return retry(err), nil
		}
	}
	if cur.seq == 0 && ev.Type != events.TypeExecutionQueued {
		return deadLetter(fmt.Sprintf("unknown execution %s", id)), nil
	}
	var hdr nats.Header // the trace context of the appended events
	if o.cfg.Tracer.On() {
		if cur.seq == 0 {
			cur.traceparent = inHdr.Get(tracing.HeaderTraceparent) // the queued event itself
		}
		if cur.traceparent != "" {
			var span trace.Span
			ctx, span = o.cfg.Tracer.Start(ctx, "execution input", nats.Header{tracing.HeaderTraceparent: {cur.traceparent}},
				trace.WithAttributes(tracing.ExecutionID.String(id), attribute.String("memmie.input", string(ev.Type))))
			defer span.End()
			hdr = tracing.Inject(ctx, nil)
		}
	}

	next := cur.state.Clone()
	next.SetCompiler(o.compiled)
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
	log.workflow = wf
	if hdr != nil {
		trace.SpanFromContext(ctx).SetAttributes(tracing.WorkflowID.String(wf))
	}
	// Encoded once: its length counts towards the history's bounds, and the bytes are
	// appended below.
	inData, err := events.Marshal(in)
	if err != nil {
		return deadLetter(err.Error()), nil
	}
	in = in.WithEncodedSize(len(inData))
	stale := next.StaleCount
	if err := next.Apply(in); err != nil {
		if seeded {
			return outcome{}, errSeedMoved
		}
		o.cache.remove(id)
		return deadLetter(err.Error()), nil
	}
	isStale := next.StaleCount > stale
	decisions, err := execution.Decide(next, in, now)
	if err != nil {
		if seeded {
			return outcome{}, errSeedMoved
		}
		log.logger().ErrorContext(ctx, "decide failed", "err", err)
		return deadLetter(err.Error()), nil
	}
	if isStale && len(decisions) == 0 {
		// A duplicate or late input (a report after a timeout, a timer of a past attempt, a
		// second cancel): the state already has what it means. Nothing to record, provided the
		// cached state is the stream's: another writer may have moved the execution on.
		switch {
		case seeded:
			return outcome{}, errSeedMoved
		case cached:
			if fresh, err := o.fresh(ctx, id, cur.seq); err != nil {
				return retry(err), nil
			} else if !fresh {
				return outcome{}, fmt.Errorf("execution %s moved on: %w", id, stream.ErrConflict)
			}
		}
		log.debug(ctx, "stale input dropped", "reason", next.Stale[len(next.Stale)-1].Reason)
		return outcome{kind: dropped}, nil
	}
	batch := append([]events.Event{in}, decisions...)
	if isStale {
		// The input is recorded, but not every decision on it: an append cut short. Record
		// the rest.
		log.logger().InfoContext(ctx, "completing the decisions of an input recorded earlier", "decisions", len(decisions))
		batch = decisions
	}
	msgs := make([]stream.Msg, 0, len(batch))
	for _, e := range batch {
		if e.ID == in.ID {
			msgs = append(msgs, stream.Msg{Subject: e.Subject, Data: inData, ID: e.ID, Header: hdr})
			continue
		}
		data := e.Encoding() // Decide encoded its decisions
		if data == nil {
			var err error
			if data, err = events.Marshal(e); err != nil {
				return deadLetter(err.Error()), nil
			}
			e = e.WithEncoding(data)
		}
		if err := next.Apply(e); err != nil {
			log.logger().ErrorContext(ctx, "a decision does not apply to its own state", "decision", e.Type, "err", err)
			return deadLetter(fmt.Sprintf("decision %s: %v", e.Type, err)), nil
		}
		msgs = append(msgs, stream.Msg{Subject: e.Subject, Data: data, ID: e.ID, Header: hdr})
	}
	if err := o.cfg.Hooks.At(ctx, faults.OrchestratorDecided, id); err != nil {
		return outcome{kind: abandoned}, nil
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
			return outcome{}, err
		}
		// The outcome is unknown (a timeout may have landed): forget the state, so that the
		// next try starts from the stream.
		o.cache.remove(id)
		return retry(err), nil
	}
	o.cache.put(id, entry{state: next, seq: ack.LastSeq, partition: partition, traceparent: cur.traceparent})
	if !seeded {
		o.seeds.drop(id) // one Seed left behind, should there be one
	}
	o.decided.Add(1)
	if o.cfg.Observer != nil && slices.ContainsFunc(batch, ends) {
		o.cfg.Observer.Ended(&next)
	}
	if next.HistoryWarning() && !cur.state.HistoryWarning() {
		// Once per execution: the run stops when the history reaches its bounds.
		h := next.History()
		log.logger().WarnContext(ctx, "execution history past half its bounds", "events", h.Events, "bytes", h.Bytes,
			"max_events", execution.MaxHistoryEvents, "max_bytes", execution.MaxHistoryBytes)
	}
	if err := o.cfg.Hooks.At(ctx, faults.OrchestratorAppended, id); err != nil {
		return outcome{kind: abandoned}, nil
	}
	if log.base.Enabled(ctx, slog.LevelDebug) {
		types := make([]string, len(decisions))
		for i, e := range decisions {
			types[i] = string(e.Type)
		}
		log.logger().DebugContext(ctx, "decided", "decisions", types, "seq", ack.LastSeq, "status", next.Status, "append", time.Since(appendStart))
	}
	return outcome{kind: recorded}, nil
}

// inputLog logs about one input. Its logger is built only when a line is written: most inputs
// log nothing, and With formats its attributes at once.
type inputLog struct {
	base                           *slog.Logger
	executionID, eventID, workflow string
	input                          events.Type
	waited                         time.Duration
}

func (g inputLog) logger() *slog.Logger {
	if g.workflow == "" {
		return g.base.With("execution_id", g.executionID, "input", g.input, "event_id", g.eventID, "waited", g.waited)
	}
	return g.base.With("execution_id", g.executionID, "input", g.input, "event_id", g.eventID, "waited", g.waited,
		"workflow_id", g.workflow)
}

func (g inputLog) debug(ctx context.Context, msg string, args ...any) {
	if g.base.Enabled(ctx, slog.LevelDebug) {
		g.logger().DebugContext(ctx, msg, args...)
	}
}

// ends reports whether ev ends an execution.
func ends(ev events.Event) bool {
	switch ev.Type {
	case events.TypeExecutionCompleted, events.TypeExecutionFailed, events.TypeExecutionCancelled:
		return true
	}
	return false
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
// event is its queued event has only that event, and every input is moot once the execution
// has ended, but a retry request of a failed one and a deltas rejection of a completed one.
func (o *Orchestrator) load(ctx context.Context, id string, input events.Type) (entry, error) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.LoadTimeout)
	defer cancel()
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
	case events.TypeExecutionCompleted:
		if input != events.TypeDeltasRejected {
			return entry{}, errStale
		}
	case events.TypeExecutionCancelled, events.TypeDeltasRejected:
		// A rejection is recorded once per completed run, and nothing follows it.
		return entry{}, errStale
	case events.TypeExecutionFailed:
		if input != events.TypeRetryRequested {
			return entry{}, errStale
		}
	}
	msgs := []jetstream.RawStreamMsg{*last}
	if t, _ := events.TypeOfTail(tail); t != events.TypeExecutionQueued {
		o.loads.Add(1)
		if msgs, err = stream.Load(ctx, o.js, o.cfg.Executions, events.ExecutionFilter(id)); err != nil {
			return entry{}, fmt.Errorf("load execution %s: %w", id, err)
		}
	}
	return o.entryOf(id, msgs)
}

// entryOf folds the messages of an execution's history, first to last.
func (o *Orchestrator) entryOf(id string, msgs []jetstream.RawStreamMsg) (entry, error) {
	history, err := Decode(msgs)
	if err != nil {
		return entry{}, fmt.Errorf("%w of %s: %v", errUnreadable, id, err)
	}
	s, err := execution.FoldWith(o.compiled, history)
	if err != nil {
		return entry{}, fmt.Errorf("%w of %s: %v", errUnreadable, id, err)
	}
	e := entry{state: s, seq: msgs[len(msgs)-1].Sequence}
	if o.cfg.Tracer.On() {
		// The first event is the queued event, whose trace the execution's events carry on.
		e.traceparent = msgs[0].Header.Get(tracing.HeaderTraceparent)
	}
	return e, nil
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
