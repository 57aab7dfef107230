package blobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/blobstore"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/partition"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the handler's dead-letter source, and the prefix of its partition consumers' names:
// blobs-<partition>.
const Name = "blobs"

// PriorityGroup is the priority group of the partition consumers, whose policy pins each
// consumer to one client at a time.
const PriorityGroup = "blobs"

// Defaults of Config.
const (
	DefaultWorkers       = 8
	DefaultAckWait       = 10 * time.Second
	DefaultMaxAckPending = 1024
	DefaultMaxConflicts  = 10
	DefaultPinnedTTL     = 5 * time.Second
)

// Store is the blob store the handler reads and appends through.
type Store = blobstore.Store[blob.State, *blob.State]

// Config configures a Handler.
type Config struct {
	// Blobs is the stream of blob events. Defaults to streams.Blobs.
	Blobs string
	// Durable prefixes the names of the blob events' partition consumers:
	// <Durable>-<partition>. Defaults to Name.
	Durable string
	// Partitions is the number of MEMMIE_BLOBS partitions (streams.Options.Partitions);
	// Assign takes partitions below it. Defaults to streams.DefaultPartitions.
	Partitions int
	// PinnedTTL is how long a partition consumer stays pinned to a client that stopped
	// pulling (a crashed process) before another client gets its events. Defaults to
	// DefaultPinnedTTL.
	PinnedTTL time.Duration
	// Triggers is the stream the trigger request of each recorded blob event is appended to,
	// for the trigger matcher (handlers/triggers). Defaults to streams.Triggers.
	Triggers string
	// Executions is the stream of execution events, whose completed events of triggered
	// executions become deltas. Defaults to streams.Executions.
	Executions string
	// OutputsDurable is the name of the consumer of completed executions. Defaults to
	// Name + "-outputs".
	OutputsDurable string
	// NoOutputs turns the writing of executions' deltas off. Defaults to false.
	NoOutputs bool
	// Store reads and appends blob states. Defaults to a blobstore on streams.Deltas with its
	// defaults (its cache bounds the states held in memory).
	Store *Store
	// Workers is how many blob events are processed at once: at most one per partition,
	// since a partition's consumer hands out its next event only once the one before is
	// settled, which is what applies each blob's events in the order they were stored, across
	// processes. Defaults to DefaultWorkers.
	Workers int
	// AckWait is how long the server waits for an event to be settled before delivering it
	// again: how soon a crashed process's events are taken up. An event takes two appends
	// (its delta and its trigger request: milliseconds), a history load on a cache miss; the
	// consume loop sends progress for the events it holds. Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the completed executions delivered and not yet settled (a blob
	// events' partition consumer has 1, see Workers). Defaults to DefaultMaxAckPending.
	MaxAckPending int
	// MaxConflicts bounds how often one event is decided again after conflicting appends
	// before it is handed back to the server. Defaults to DefaultMaxConflicts.
	MaxConflicts int
	// Now is the clock of deltas. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span per blob event and per completed execution's deltas, and carries
	// the trace context on the deltas and trigger requests. Defaults to off.
	Tracer tracing.Tracer
	// DeadLetter records events that can never be processed. Required.
	DeadLetter *deadletter.Writer
	// Hooks inject faults (tests only): faults.BlobsAppended (with the blob id),
	// faults.BlobsOutputDeltaAppended and faults.BlobsOutputDeltasAppended. Defaults to none.
	Hooks faults.Hook
	// RetryBackoff and MaxRetryBackoff pace the retries of an event whose load or appends
	// failed for a transient reason. Default to consume.DefaultRetryBackoff and
	// consume.DefaultMaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// Observer is told of each triggered execution whose deltas this process appended.
	// Defaults to none.
	Observer OutputObserver
}

// OutputObserver is told of the outputs the handler wrote. It is called on the outputs
// consumer's worker once the appends are acknowledged, and must return at once.
type OutputObserver interface {
	// OutputWritten: the deltas of execution x, the last of them last, were appended on
	// before, the blob's state they were applied to (shared, never modify it). Told once per
	// delivery that appended deltas: a write cut short and resumed is told again, with the rest.
	OutputWritten(x blob.Execution, before *blob.State, last events.Delta)
}

func (c *Config) defaults(js jetstream.JetStream) error {
	c.Blobs = cmp.Or(c.Blobs, streams.Blobs)
	c.Durable = cmp.Or(c.Durable, Name)
	c.Triggers = cmp.Or(c.Triggers, streams.Triggers)
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.OutputsDurable = cmp.Or(c.OutputsDurable, Name+"-outputs")
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.MaxConflicts = cmp.Or(c.MaxConflicts, DefaultMaxConflicts)
	c.Partitions = cmp.Or(c.Partitions, streams.DefaultPartitions)
	c.PinnedTTL = cmp.Or(c.PinnedTTL, DefaultPinnedTTL)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.DeadLetter == nil:
		return errors.New("blobs: DeadLetter is required")
	case c.Workers < 0:
		return fmt.Errorf("blobs: Workers %d is negative", c.Workers)
	case c.AckWait < time.Second:
		return fmt.Errorf("blobs: AckWait %s is under a second", c.AckWait)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("blobs: MaxAckPending %d is under Workers %d", c.MaxAckPending, c.Workers)
	case c.MaxConflicts < 0:
		return fmt.Errorf("blobs: MaxConflicts %d is negative", c.MaxConflicts)
	case c.Partitions < 0 || c.Partitions > streams.MaxPartitions:
		return fmt.Errorf("blobs: Partitions %d is not within 1 to %d", c.Partitions, streams.MaxPartitions)
	case c.PinnedTTL < 2*time.Second:
		// Pulls renew the pin; they expire after at least a second.
		return fmt.Errorf("blobs: PinnedTTL %s is under 2 seconds", c.PinnedTTL)
	}
	if c.Store == nil {
		s, err := blobstore.New[blob.State](js, blobstore.Config{})
		if err != nil {
			return fmt.Errorf("blobs: %w", err)
		}
		c.Store = s
	}
	return nil
}

// Handler records blob events as deltas and asks the trigger matcher to start the executions
// they trigger.
type Handler struct {
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	loop *consume.Loop
	// outputs consumes completed executions; nil with Config.NoOutputs.
	outputs *consume.Loop
	parts   *partition.Set
}

// New checks cfg and returns a handler. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Handler, error) {
	if err := cfg.defaults(js); err != nil {
		return nil, err
	}
	h := &Handler{js: js, cfg: cfg, log: cfg.Logger.With("component", Name)}
	// The partition consumers are added by Assign.
	loop, err := consume.New(js, consume.Config{
		Name:    Name,
		Stream:  cfg.Blobs,
		Workers: cfg.Workers,
		// A partition holds one event at a time; the key keeps a blob on one worker anyway.
		Key:             blobKey,
		RetryBackoff:    cfg.RetryBackoff,
		MaxRetryBackoff: cfg.MaxRetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		Logger:          cfg.Logger,
	}, h.handle)
	if err != nil {
		return nil, err
	}
	h.loop = loop
	h.parts, err = partition.New(js, partition.Config{
		Name:       Name,
		Stream:     cfg.Blobs,
		Loop:       loop,
		Durable:    cfg.Durable,
		Consumer:   h.consumerConfig,
		Group:      PriorityGroup,
		PinnedTTL:  cfg.PinnedTTL,
		Partitions: cfg.Partitions,
		Logger:     h.log,
	})
	if err != nil {
		return nil, err
	}
	if cfg.NoOutputs {
		return h, nil
	}
	h.outputs, err = consume.New(js, consume.Config{
		Name:   Name,
		Stream: cfg.Executions,
		Consumer: jetstream.ConsumerConfig{
			Durable:       cfg.OutputsDurable,
			Description:   "Writes the deltas of the completed executions that blob events triggered",
			FilterSubject: OutputsFilter,
			// From the first: an execution that completed while no process ran still writes.
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			// Unlimited, as for blob events: transient failures are retried, and what can
			// never be written is dead-lettered by the handler.
			MaxDeliver:    -1,
			MaxAckPending: cfg.MaxAckPending,
		},
		Workers:         cfg.Workers,
		RetryBackoff:    cfg.RetryBackoff,
		MaxRetryBackoff: cfg.MaxRetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		Logger:          cfg.Logger,
	}, h.handleOutput)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// blobKey is the blob id of memmie.blobs.<partition>.<blob_id>.<kind>, or the subject.
func blobKey(msg jetstream.Msg) string {
	t := strings.SplitN(msg.Subject(), ".", 5)
	if len(t) == 5 {
		return t[3]
	}
	return msg.Subject()
}

// Start starts consuming completed executions, and the workers of blob events: they get
// events once Assign gives them partitions.
func (h *Handler) Start(ctx context.Context) error {
	if err := h.loop.Start(ctx); err != nil {
		return err
	}
	if h.outputs != nil {
		if err := h.outputs.Start(ctx); err != nil {
			_ = h.loop.Stop(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

// Stop stops consuming; events in progress finish (see consume.Loop.Stop). Then it unpins its
// partitions, so that the processes that take them over get their events at once.
// An Assign in progress is cut short and waited for before the partitions stop (see
// partition.Set.Stop).
func (h *Handler) Stop(ctx context.Context) error {
	var err error
	if h.outputs != nil {
		err = h.outputs.Stop(ctx)
	}
	return errors.Join(err, h.parts.Stop(ctx))
}

// ConsumerName returns the durable name of a partition's consumer.
func (h *Handler) ConsumerName(partition int) string { return h.parts.ConsumerName(partition) }

// consumerConfig is the durable consumer of one MEMMIE_BLOBS partition. It is pinned to one
// client at a time, the process the partition is assigned to (package partition), so that the
// blob's state stays in one process's cache; a crashed process's pin expires after PinnedTTL.
func (h *Handler) consumerConfig(partition int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Description:   "Records the blob events of one partition as deltas and starts the workflows they trigger",
		FilterSubject: streams.BlobPartitionFilter(partition),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       h.cfg.AckWait,
		// Unlimited: a transient failure is retried for as long as it lasts, and an event
		// must never be dropped silently. What can never apply is dead-lettered by the
		// handler.
		MaxDeliver: -1,
		// One event of the partition at a time: the next is delivered only once this one is
		// acked or dead-lettered, so that a blob's events are applied in stream order even
		// when one is retried, or redelivered after a crash (the server redelivers expired
		// messages in batches, which need not keep their order).
		MaxAckPending: 1,
	}
}

// Assign makes the handler consume exactly the given MEMMIE_BLOBS partitions: it stops
// consuming (drains, then unpins) those it no longer has, then starts on the new ones. The
// engine calls it with the orchestrator's partitions whenever the live processes change.
// Calls are serialized; a partition that fails to start is left out, and the next call tries
// again (see partition.Set.Assign).
func (h *Handler) Assign(ctx context.Context, partitions []int) error {
	return h.parts.Assign(ctx, partitions)
}

// Partitions returns the MEMMIE_BLOBS partitions consumed now, sorted.
func (h *Handler) Partitions() []int { return h.parts.Partitions() }

// Stats returns the counters of the blob events' consume loop.
func (h *Handler) Stats() consume.Stats { return h.loop.Stats() }

// OutputStats returns the counters of the completed executions' consume loop (zero with
// Config.NoOutputs).
func (h *Handler) OutputStats() consume.Stats {
	if h.outputs == nil {
		return consume.Stats{}
	}
	return h.outputs.Stats()
}

// StoreStats returns the blob store's counters (history loads, cache hits, conflicts).
func (h *Handler) StoreStats() blobstore.Stats { return h.cfg.Store.Stats() }

func (h *Handler) handle(ctx context.Context, d consume.Delivery) consume.Outcome {
	// A client's traceparent makes the event part of its trace; without one it starts a trace.
	ctx, span := h.cfg.Tracer.Start(ctx, "blob event", d.Msg.Headers())
	defer span.End()
	msgID := d.Msg.Headers().Get(jetstream.MsgIDHeader)
	if msgID == "" {
		// Stable across redeliveries; a re-publish without an id is another event.
		msgID = d.Meta.Stream + "/" + strconv.FormatUint(d.Meta.Sequence.Stream, 10)
	}
	_, subject, err := streams.ParseBlobPartitionSubject(d.Msg.Subject())
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	ev, err := blob.Parse(blob.Message{Subject: subject, Body: d.Msg.Data(), MsgID: msgID})
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	if h.cfg.Tracer.On() {
		span.SetAttributes(tracing.BlobID.String(ev.Data.BlobID), tracing.EventID.String(ev.ID),
			attribute.String("memmie.kind", string(ev.Kind())))
	}
	log := h.log.With("blob_id", ev.Data.BlobID, "event_id", ev.ID, "kind", ev.Kind())
	after, out, ok := h.record(ctx, log, ev)
	if !ok {
		return out
	}
	if err := h.cfg.Hooks.At(ctx, faults.BlobsAppended, ev.Data.BlobID); err != nil {
		return consume.Abandon()
	}
	return h.request(ctx, log, ev, after)
}

// record appends the event's delta, or finds it recorded already, and returns the blob at the
// event's version. ok is false when out settles the event.
func (h *Handler) record(ctx context.Context, log *slog.Logger, ev blob.Event) (after blob.State, out consume.Outcome, ok bool) {
	store := h.cfg.Store
	id := ev.Data.BlobID
	e, err := store.Get(ctx, id)
	fresh := false
	for attempt := 1; ; attempt++ {
		if err != nil {
			return blob.State{}, loadOutcome(err), false
		}
		dec, err := blob.Decide(e.State, ev, h.cfg.Now())
		var refusal *blob.Refusal
		switch {
		case errors.As(err, &refusal) && !fresh:
			// A cached state may be behind another process's appends: refuse on the stream's.
			e, err = store.Fresh(ctx, id)
			fresh = true
			continue
		case errors.As(err, &refusal):
			// No earlier event of the blob is pending: its partition hands out one at a time.
			log.InfoContext(ctx, "blob event refused", "reason", refusal.Reason, "err", err)
			return blob.State{}, consume.DeadLetter(err.Error()), false
		case err != nil:
			log.ErrorContext(ctx, "decide failed", "err", err)
			return blob.State{}, consume.DeadLetter(err.Error()), false
		case dec.Duplicate:
			at, err := store.AtVersion(ctx, e, dec.Version, func(s *blob.State) int64 { return s.Version })
			if err != nil {
				return blob.State{}, loadOutcome(err), false
			}
			log.DebugContext(ctx, "blob event recorded before", "version", dec.Version)
			return at, consume.Outcome{}, true
		}
		next, err := store.AppendHeader(ctx, e, tracing.Inject(ctx, nil), dec.Delta)
		switch {
		case err == nil:
			log.DebugContext(ctx, "delta appended", "version", dec.Version, "type", dec.Delta.Type)
			return next.State, consume.Outcome{}, true
		case !errors.Is(err, stream.ErrConflict):
			return blob.State{}, consume.Retry(err, 0), false
		case attempt >= h.cfg.MaxConflicts:
			return blob.State{}, consume.Retry(fmt.Errorf("after %d conflicting appends: %w", attempt, err), 0), false
		}
		// Another writer appended first: catch up on its deltas and decide again.
		log.DebugContext(ctx, "append conflict; deciding again", "attempt", attempt)
		e, err = store.Fresh(ctx, id)
		fresh = true
	}
}

// loadOutcome settles an event whose blob could not be read: a history too large or
// unreadable can never be processed; anything else passes.
func loadOutcome(err error) consume.Outcome {
	if errors.Is(err, blobstore.ErrTooLarge) || errors.Is(err, blobstore.ErrUnreadable) {
		return consume.DeadLetter(err.Error())
	}
	return consume.Retry(err, 0)
}

// request appends the event's trigger request, for the matcher to start the executions the
// event triggers on the blob after it. It comes after the delta and before the ack: a crash in
// between delivers the event again, which finds its delta (a duplicate) and asks again, under
// the same Nats-Msg-Id; the starts' ids are deterministic, so a request handled twice starts
// nothing new.
func (h *Handler) request(ctx context.Context, log *slog.Logger, ev blob.Event, after blob.State) consume.Outcome {
	subject, err := events.TriggerSubject(ev.Data.BlobID)
	if err != nil {
		return consume.DeadLetter(err.Error())
	}
	id := events.TriggerRequestID(ev.Data.BlobID, ev.ID)
	data, err := events.Marshal(events.Event{
		ID:      id,
		Source:  events.SourceBlobs,
		Type:    events.TypeTriggerRequested,
		Subject: subject,
		Time:    h.cfg.Now(),
		Data: &events.TriggerRequested{
			EventID: ev.ID,
			Kind:    ev.Kind(),
			Event:   ev.Data,
			Blob:    after.Snapshot(),
		},
	})
	if err != nil {
		// Too large: the event data and the blob carry the content twice, as the input of
		// the executions it would start does, which could not be queued either.
		log.WarnContext(ctx, "trigger request cannot be encoded: recorded, nothing started", "err", err)
		return consume.DeadLetter("trigger request: " + err.Error())
	}
	msg := stream.Msg{Subject: subject, Data: data, ID: id,
		Header: tracing.Inject(ctx, nats.Header{events.HeaderCorrelationID: []string{ev.ID}})}
	if _, err := stream.Append(ctx, h.js, h.cfg.Triggers, []stream.Msg{msg}, stream.Expect{}); err != nil {
		// The delta is written: the event comes back as a duplicate and asks again.
		return consume.Retry(fmt.Errorf("request triggers of %s: %w", ev.ID, err), 0)
	}
	log.DebugContext(ctx, "triggers requested", "version", after.Version)
	return consume.Ack()
}
