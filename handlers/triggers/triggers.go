package triggers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// Name is the matcher's durable consumer, its router handler and its dead-letter source.
const Name = "triggers"

// Defaults of Config.
const (
	DefaultAckWait         = 10 * time.Second
	DefaultMaxAckPending   = 16
	DefaultWorkers         = 4
	DefaultRetryBackoff    = 250 * time.Millisecond
	DefaultMaxRetryBackoff = 10 * time.Second
	DefaultMaxPanics       = 5
)

// Errors a Config.Prepare returns to say what becomes of a start.
var (
	// ErrSkipped: the workflow is not registered or not active; the start is skipped.
	ErrSkipped = errors.New("triggered workflow skipped")
	// ErrUnstartable: the start can never succeed (its input breaks the workflow's input
	// schema); the request is dead-lettered with the reason once its other starts are made.
	ErrUnstartable = errors.New("triggered execution cannot start")
	// errUnreadable: the request cannot be read or matched; it is dead-lettered.
	errUnreadable = errors.New("unreadable trigger request")
)

// Prepare builds the queued event (events.ExecutionQueued) of a start, under the start's
// deterministic execution id, without appending it: the matcher appends it, expecting no
// event yet on the execution's subjects. It returns an error matching ErrSkipped or
// ErrUnstartable, or any other error for a transient failure (the request is retried).
type Prepare func(ctx context.Context, s trigger.Start) (stream.Msg, error)

// Config configures a Matcher.
type Config struct {
	// Stream is the stream of trigger requests. Defaults to streams.Triggers.
	Stream string
	// Executions is the stream the queued events are appended to. Defaults to
	// streams.Executions.
	Executions string
	// Durable names the durable consumer of the requests. Defaults to Name.
	Durable string
	// Providers returns the active providers, whose triggers each request is matched against.
	// Defaults to none: every request is acknowledged and starts nothing.
	Providers func() []*definitions.Provider
	// Prepare builds the queued event of a start. Required with Providers.
	Prepare Prepare
	// Trigger configures matching: the derivation bound (memmie's --max-derivation-depth).
	// Defaults to trigger.Config{}.
	Trigger trigger.Config
	// AckWait is how long the server waits for a request to be settled before delivering it
	// again: how soon a crashed process's requests are taken up. A request takes a match
	// (microseconds) and one append per start (milliseconds); the consume loop sends progress
	// for the requests in flight. Defaults to DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the requests delivered and not yet settled. Defaults to
	// DefaultMaxAckPending.
	MaxAckPending int
	// Workers is how many requests are handled at once. The loop pulls only for free
	// workers, so no request waits in the client while its AckWait runs. Defaults to
	// DefaultWorkers.
	Workers int
	// RetryBackoff is the first wait after a transient failure; it doubles with each
	// delivery up to MaxRetryBackoff. Default to DefaultRetryBackoff and
	// DefaultMaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// MaxPanics is how many deliveries of one request may panic before it is dead-lettered: a
	// panic is a bug, which may pass with the state (it is retried), or not. Defaults to
	// DefaultMaxPanics.
	MaxPanics int
	// DeadLetter records the requests that can never be processed. Required.
	DeadLetter *deadletter.Writer
	// Metrics, when set, registers the router's Prometheus metrics
	// (memmie_triggers_handler_execution_time_seconds and the subscriber's and publisher's).
	// Defaults to none.
	Metrics prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer records a span per trigger request, the child of the blob event's, and carries
	// the trace context on the queued events. Defaults to off.
	Tracer tracing.Tracer
}

func (c *Config) defaults() error {
	c.Stream = cmp.Or(c.Stream, streams.Triggers)
	c.Executions = cmp.Or(c.Executions, streams.Executions)
	c.Durable = cmp.Or(c.Durable, Name)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, DefaultRetryBackoff)
	c.MaxRetryBackoff = cmp.Or(c.MaxRetryBackoff, DefaultMaxRetryBackoff)
	c.MaxPanics = cmp.Or(c.MaxPanics, DefaultMaxPanics)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.DeadLetter == nil:
		return errors.New("triggers: DeadLetter is required")
	case c.Providers != nil && c.Prepare == nil:
		return errors.New("triggers: Prepare is required with Providers")
	case c.AckWait < time.Second:
		return fmt.Errorf("triggers: AckWait %s is under a second", c.AckWait)
	case c.MaxAckPending < 1:
		return fmt.Errorf("triggers: MaxAckPending %d is under 1", c.MaxAckPending)
	case c.Workers < 1 || c.Workers > c.MaxAckPending:
		return fmt.Errorf("triggers: Workers %d is not within 1 to MaxAckPending %d", c.Workers, c.MaxAckPending)
	case c.MaxPanics < 1:
		return fmt.Errorf("triggers: MaxPanics %d is under 1", c.MaxPanics)
	case c.MaxRetryBackoff < c.RetryBackoff:
		return fmt.Errorf("triggers: MaxRetryBackoff %s is under RetryBackoff %s", c.MaxRetryBackoff, c.RetryBackoff)
	}
	if c.Trigger.MaxDerivationDepth < 0 {
		return fmt.Errorf("triggers: Trigger.MaxDerivationDepth %d is negative", c.Trigger.MaxDerivationDepth)
	}
	return nil
}

// Stats counts what a matcher did since it was created.
type Stats struct {
	// Requests counts the deliveries handled, whatever became of them.
	Requests uint64 `json:"requests"`
	// Started counts the executions queued; Before those found queued already.
	Started uint64 `json:"started"`
	Before  uint64 `json:"started_before"`
	// Skipped counts the starts of workflows not registered or not active.
	Skipped uint64 `json:"skipped"`
	// DeadLettered counts the requests dead-lettered.
	DeadLettered uint64 `json:"dead_lettered"`
	// Retried counts the deliveries handed back for a transient failure (of the handler or
	// of an append) or a panic.
	Retried uint64 `json:"retried"`
}

type counters struct {
	requests, started, before, skipped, deadLettered, retried atomic.Uint64
}

// Matcher consumes trigger requests and queues the executions they start.
type Matcher struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger
	n   counters

	mu     sync.Mutex
	router *message.Router
	done   chan error
}

// New checks cfg and returns a matcher on js. Start starts it.
func New(js jetstream.JetStream, cfg Config) (*Matcher, error) {
	if js == nil {
		return nil, errors.New("triggers: no JetStream context")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Matcher{js: js, cfg: cfg, log: cfg.Logger.With("component", Name)}, nil
}

// Stats returns the matcher's counters.
func (m *Matcher) Stats() Stats {
	return Stats{
		Requests:     m.n.requests.Load(),
		Started:      m.n.started.Load(),
		Before:       m.n.before.Load(),
		Skipped:      m.n.skipped.Load(),
		DeadLettered: m.n.deadLettered.Load(),
		Retried:      m.n.retried.Load(),
	}
}

// ConsumerConfig is the durable consumer of the requests, which the subscriber's consume loop
// creates or updates.
func (m *Matcher) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     m.cfg.Durable,
		Description: "Starts the executions that recorded blob events trigger",
		// Every request: the stream is a work queue, so one consumer takes them all.
		FilterSubject: events.SubjectTriggers,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       m.cfg.AckWait,
		// Unlimited: a transient failure (NATS or the executions' stream unavailable) is
		// retried for as long as it lasts, and a request must never be dropped silently; what
		// can never be processed is dead-lettered by the handler.
		MaxDeliver: -1,
		// Few at a time: a request waits in the client while those before it are handled,
		// and its AckWait runs meanwhile.
		MaxAckPending: m.cfg.MaxAckPending,
	}
}

// Start creates the durable consumer and runs the router until Stop.
func (m *Matcher) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.router != nil {
		return errors.New("triggers: already started")
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(m.log, map[slog.Level]slog.Level{
		// The router logs every retried request at error.
		slog.LevelInfo:  slog.LevelDebug,
		slog.LevelError: slog.LevelWarn,
	})
	sub, err := newSubscriber(m.js, consume.Config{
		Name:            Name,
		Stream:          m.cfg.Stream,
		Consumer:        m.ConsumerConfig(),
		Workers:         m.cfg.Workers,
		RetryBackoff:    m.cfg.RetryBackoff,
		MaxRetryBackoff: m.cfg.MaxRetryBackoff,
		DeadLetter:      m.cfg.DeadLetter,
		Logger:          m.cfg.Logger,
	}, m.cfg.AckWait)
	if err != nil {
		return fmt.Errorf("triggers: subscriber: %w", err)
	}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return fmt.Errorf("triggers: router: %w", err)
	}
	if m.cfg.Metrics != nil {
		metrics.NewPrometheusMetricsBuilder(m.cfg.Metrics, "memmie", Name).AddPrometheusRouterMetrics(r)
	}
	poison, err := middleware.PoisonQueueWithFilter(&deadLetters{w: m.cfg.DeadLetter, n: &m.n}, streams.DeadLetter, permanent)
	if err != nil {
		return fmt.Errorf("triggers: poison queue: %w", err)
	}
	// Outermost first: the counters see what the router does (an error is a nack); the
	// correlation id reaches the outputs whatever happens inside; a permanent error is
	// dead-lettered (and its outputs still published, see handle); a panic becomes an error
	// that the poison queue's filter lets through, to be retried, until the request has
	// panicked MaxPanics times.
	r.AddMiddleware(m.count, middleware.CorrelationID, poison, m.panics, middleware.Recoverer)
	r.AddHandler(Name, m.cfg.Stream, sub, m.cfg.Executions, &executions{js: m.js, log: m.log, n: &m.n}, m.handle)

	runCtx := context.WithoutCancel(ctx) // Start's ctx bounds the start, not the run
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	select {
	case <-r.Running():
	case err := <-done:
		return fmt.Errorf("triggers: %w", err)
	case <-ctx.Done():
		_ = r.Close()
		return fmt.Errorf("triggers: start: %w", ctx.Err())
	}
	m.router, m.done = r, done
	m.log.Debug("trigger matcher started", "consumer", m.cfg.Durable)
	return nil
}

// Stop closes the router: the request in progress finishes (up to ctx), the subscriber
// drains its connection, and an unsettled request is delivered again after AckWait.
func (m *Matcher) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.router == nil {
		return nil
	}
	r, done := m.router, m.done
	m.router, m.done = nil, nil
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			return fmt.Errorf("triggers: stop: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("triggers: stop: %w", ctx.Err())
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("triggers: stop: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("triggers: stop: %w", ctx.Err())
	}
	return nil
}

// permanent says which errors the poison queue dead-letters: a request that cannot be read
// and a start that can never succeed. Anything else (NATS unavailable, a panic) is nacked
// and retried with the backoff.
func permanent(err error) bool {
	return errors.Is(err, errUnreadable) || errors.Is(err, ErrUnstartable)
}

// panics turns the panic of a request delivered MaxPanics times or more into a permanent
// error, for the poison queue to dead-letter. (The count is of deliveries, which a panic
// each time makes equal to the panics.)
func (m *Matcher) panics(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		var p middleware.RecoveredPanicError
		if errors.As(err, &p) {
			n, _ := strconv.Atoi(msg.Metadata.Get(keyDelivered))
			m.log.Error("trigger request handler panicked", "panic", fmt.Sprint(p.V), "delivered", n, "stack", p.Stacktrace)
			if n >= m.cfg.MaxPanics {
				return out, fmt.Errorf("%w: panicked on %d deliveries: %v", errUnreadable, n, p.V)
			}
		}
		return out, err
	}
}

// count counts the requests, and those whose handler failed (the router nacks them).
func (m *Matcher) count(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		m.n.requests.Add(1)
		out, err := h(msg)
		if err != nil {
			m.n.retried.Add(1)
		}
		return out, err
	}
}

// handle matches one request and returns one queued event per start, which the router
// appends through the executions publisher once it returns.
func (m *Matcher) handle(msg *message.Message) ([]*message.Message, error) {
	if reason := msg.Metadata.Get(keyUnreadable); reason != "" {
		return nil, fmt.Errorf("%w: %s", errUnreadable, reason)
	}
	ev, after, err := decode(msg.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	ctx := msg.Context()
	if m.cfg.Tracer.On() {
		var hdr nats.Header
		if tp := msg.Metadata.Get(keyTraceparent); tp != "" {
			hdr = nats.Header{tracing.HeaderTraceparent: []string{tp}}
		}
		var span trace.Span
		ctx, span = m.cfg.Tracer.Start(ctx, "trigger request", hdr,
			trace.WithAttributes(tracing.BlobID.String(ev.Data.BlobID), tracing.EventID.String(ev.ID)))
		defer span.End()
	}
	log := m.log.With("blob_id", ev.Data.BlobID, "event_id", ev.ID, "kind", ev.Kind())
	if m.cfg.Trigger.PastBound(ev) {
		log.InfoContext(ctx, "derived blob past the derivation bound: recorded, nothing started", "depth", ev.Data.DerivedFrom.Depth)
		return nil, nil
	}
	if m.cfg.Providers == nil {
		return nil, nil
	}
	starts, err := trigger.Match(m.cfg.Providers(), ev, after, m.cfg.Trigger)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	var (
		out     []*message.Message
		refused []string
	)
	for _, s := range starts {
		sl := log.With("execution_id", s.ExecutionID, "workflow_id", s.WorkflowID, "provider_id", s.ProviderID)
		q, err := m.cfg.Prepare(ctx, s)
		switch {
		case err == nil:
			om := message.NewMessage(q.ID, q.Data)
			om.Metadata.Set(keySubject, q.Subject)
			om.Metadata.Set(keyExecutionID, s.ExecutionID)
			if tp := tracing.Inject(ctx, nil).Get(tracing.HeaderTraceparent); tp != "" {
				om.Metadata.Set(keyTraceparent, tp)
			}
			out = append(out, om)
			sl.DebugContext(ctx, "triggered", "trigger", s.Trigger, "base_version", s.BaseVersion)
		case errors.Is(err, ErrSkipped):
			m.n.skipped.Add(1)
			sl.DebugContext(ctx, "trigger skipped", "err", err)
		case errors.Is(err, ErrUnstartable):
			sl.WarnContext(ctx, "triggered execution cannot start", "err", err)
			refused = append(refused, fmt.Sprintf("start of workflow %s (provider %s): %v", s.WorkflowID, s.ProviderID, err))
		default:
			return nil, fmt.Errorf("prepare the start of workflow %s: %w", s.WorkflowID, err)
		}
	}
	if len(refused) > 0 {
		// The poison queue dead-letters the request and returns the outputs with no error,
		// so the router still appends the other starts; should an append fail, the request
		// comes back, is dead-lettered again under the same id, and starts what is missing.
		return out, fmt.Errorf("%w: %s", ErrUnstartable, strings.Join(refused, "; "))
	}
	return out, nil
}

// decode reads a trigger request into the blob event and the blob after it.
func decode(payload []byte) (blob.Event, blob.State, error) {
	env, err := events.Decode(payload)
	if err != nil {
		return blob.Event{}, blob.State{}, fmt.Errorf("decode trigger request: %w", err)
	}
	req, ok := env.Data.(*events.TriggerRequested)
	if !ok {
		return blob.Event{}, blob.State{}, fmt.Errorf("decode trigger request: got %s", env.Type)
	}
	ev := blob.Event{ID: req.EventID, Data: req.Event}
	snap := req.Blob
	// Match reads the blob's identity and document only, which is what the snapshot holds.
	after := blob.State{BlobID: snap.BlobID, UserID: snap.UserID, Version: snap.Version, Content: snap.Content,
		Metadata: snap.Metadata, Deleted: snap.Deleted, DerivedFrom: snap.DerivedFrom}
	return ev, after, nil
}

// Metadata keys the unmarshaler sets: where the request was stored, for its dead letter.
const (
	keySubject     = "memmie_subject"
	keyStream      = "memmie_stream"
	keySequence    = "memmie_sequence"
	keyHeaders     = "memmie_headers"
	keyDelivered   = "memmie_delivered"
	keyUnreadable  = "memmie_unreadable"
	keyExecutionID = "memmie_execution_id"
	// keyTraceparent is the request's traceparent, on a request; the trigger span's, on a
	// queued event.
	keyTraceparent = "memmie_traceparent"
)

// unmarshaler turns a JetStream message into a Watermill message and never fails
// (watermill-nats' own returns nil for a message with a multi-valued header, on which its
// subscriber panics). A message it cannot read is marked (keyUnreadable), for the handler to
// dead-letter.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(jm jetstream.Msg) (*message.Message, error) {
	h := jm.Headers()
	md := message.Metadata{keySubject: jm.Subject()}
	id := h.Get(jetstream.MsgIDHeader)
	if meta, err := jm.Metadata(); err == nil {
		md[keyStream] = meta.Stream
		md[keySequence] = strconv.FormatUint(meta.Sequence.Stream, 10)
		md[keyDelivered] = strconv.FormatUint(meta.NumDelivered, 10)
		id = cmp.Or(id, meta.Stream+"/"+md[keySequence])
	} else {
		md[keyUnreadable] = "no JetStream metadata: " + err.Error()
	}
	if len(h) > 0 {
		if raw, err := json.Marshal(h); err == nil {
			md[keyHeaders] = string(raw)
		}
	}
	// The correlation id, for the CorrelationID middleware; a header given twice counts
	// once (the first), like nats.Header.Get.
	if c := h.Get(events.HeaderCorrelationID); c != "" {
		md.Set(middleware.CorrelationIDMetadataKey, c)
	}
	if tp := h[tracing.HeaderTraceparent]; len(tp) > 0 {
		md[keyTraceparent] = tp[0]
	}
	msg := message.NewMessage(id, jm.Data())
	msg.Metadata = md
	return msg, nil
}

// executions is the router's publisher of the queued events: each is appended expecting no
// event yet on its execution's subjects, as Engine.Start appends it, so that an execution is
// queued once however often its request is handled. Watermill's own publisher discards the
// PubAck, which this needs.
type executions struct {
	js  jetstream.JetStream
	log *slog.Logger
	n   *counters
}

func (p *executions) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		id := msg.Metadata.Get(keyExecutionID)
		q := stream.Msg{Subject: msg.Metadata.Get(keySubject), Data: msg.Payload, ID: msg.UUID}
		if c := middleware.MessageCorrelationID(msg); c != "" {
			q.Header = nats.Header{events.HeaderCorrelationID: []string{c}}
		}
		ctx := msg.Context()
		if tp := msg.Metadata.Get(keyTraceparent); tp != "" {
			// The execution's history keeps the trace: its steps and deltas join it.
			if q.Header == nil {
				q.Header = nats.Header{}
			}
			q.Header[tracing.HeaderTraceparent] = []string{tp}
			ctx = tracing.Extract(ctx, q.Header) // for the log lines' trace id
		}
		ack, err := stream.Append(msg.Context(), p.js, topic, []stream.Msg{q}, stream.Expect{FilterSubject: events.ExecutionFilter(id)})
		switch {
		case errors.Is(err, stream.ErrConflict), err == nil && ack.Duplicate:
			p.n.before.Add(1)
			p.log.DebugContext(ctx, "triggered execution started before", "execution_id", id)
		case err != nil:
			// The router nacks the request: it comes back after the backoff.
			p.n.retried.Add(1)
			return fmt.Errorf("queue execution %s: %w", id, err)
		default:
			p.n.started.Add(1)
			p.log.InfoContext(ctx, "execution queued", "execution_id", id, "source", "triggers")
		}
	}
	return nil
}

// Close is a no-op: the publisher shares the engine's connection.
func (p *executions) Close() error { return nil }

// deadLetters is the poison queue's publisher: it records a request that can never be
// processed on memmie.deadletter.triggers, with the subject, stream and sequence it was stored
// under and the reason.
type deadLetters struct {
	w *deadletter.Writer
	n *counters
}

func (p *deadLetters) Publish(_ string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		seq, _ := strconv.ParseUint(msg.Metadata.Get(keySequence), 10, 64)
		var h nats.Header
		if raw := msg.Metadata.Get(keyHeaders); raw != "" {
			_ = json.Unmarshal([]byte(raw), &h)
		}
		m := deadletter.Message{
			Stream:   msg.Metadata.Get(keyStream),
			Sequence: seq,
			Subject:  msg.Metadata.Get(keySubject),
			Header:   h,
			Data:     msg.Payload,
		}
		if err := p.w.RecordMessage(msg.Context(), Name, m, msg.Metadata.Get(middleware.ReasonForPoisonedKey)); err != nil {
			return err
		}
		p.n.deadLettered.Add(1)
	}
	return nil
}

// Close is a no-op: the writer shares the engine's connection.
func (p *deadLetters) Close() error { return nil }
