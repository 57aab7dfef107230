// Package consume runs a handler over durable JetStream pull consumers: a pool of workers,
// per-key ordering, acknowledgements from the handler's outcome, progress heartbeats for long
// work, dead letters for poison messages, panic recovery, and a clean drain on Stop.
//
//	loop, err := consume.New(js, consume.Config{
//		Name:       "runner",
//		Stream:     "MEMMIE_EXECUTIONS",
//		Consumer:   jetstream.ConsumerConfig{Durable: "runner", AckWait: 30 * time.Second, ...},
//		Workers:    32,
//		DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
//	}, func(ctx context.Context, d consume.Delivery) consume.Outcome {
//		if bad { return consume.DeadLetter("decode: ...") }
//		return consume.Ack()
//	})
//	err = loop.Start(ctx)
//	defer loop.Stop(ctx)
//
// A handler names what happened as an Outcome, and the loop maps it onto the message: Ack,
// Retry (a failure: nak with backoff, dead-lettered after MaxFailures deliveries), Hold (not
// due yet: nak with an exact delay, not a failure), DeadLetter (record, then ack) or Abandon
// (an injected crash: leave it unsettled).
//
// One loop may consume several consumers with the same workers and handler, added and removed
// while it runs (the orchestrator consumes the inbox partitions its process is assigned):
//
//	err = loop.Add(ctx, jetstream.ConsumerConfig{Durable: "orchestrator-3", ...})
//	err = loop.Remove(ctx, "orchestrator-3") // stops pulling, waits for its messages to settle
//
// Why not Watermill's JetStream subscriber: it hands a handler one message at a time per
// subscription, acks or naks with one static delay policy, and exposes neither the delivery
// metadata (NumDelivered, needed to act on the last delivery) nor InProgress (needed to keep a
// long HTTP call's message from being redelivered) nor a per-message NakWithDelay (needed to
// hold a timer until it is due). Its router middleware would sit on top of exactly this loop,
// wrapping and unwrapping every message for a recoverer and a poison queue that are a few lines
// here; so the loop uses nats.go's jetstream consumers directly.
package consume

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/jetstream/deadletter"
)

type outcomeKind int

const (
	kindAck outcomeKind = iota
	kindRetry
	kindHold
	kindDeadLetter
	kindAbandon
)

// Outcome is what a handler made of a message.
type Outcome struct {
	kind   outcomeKind
	delay  time.Duration
	reason string
	err    error
}

// Ack: the message is done.
func Ack() Outcome { return Outcome{kind: kindAck} }

// Retry: processing failed for a reason that may pass (NATS unreachable, a timeout). The
// message is delivered again after delay, or after the loop's backoff when delay is 0. After
// MaxFailures deliveries it is dead-lettered with err as the reason.
func Retry(err error, delay time.Duration) Outcome {
	if err == nil {
		err = errors.New("retry")
	}
	return Outcome{kind: kindRetry, err: err, delay: delay}
}

// Hold: the message is not due yet; deliver it again after delay. Not a failure.
func Hold(delay time.Duration) Outcome {
	return Outcome{kind: kindHold, delay: max(delay, time.Millisecond)}
}

// DeadLetter: the message can never be processed (undecodable, unknown type, unknown
// execution). It is recorded with the reason on memmie.deadletter.<name>, then acked.
func DeadLetter(reason string) Outcome { return Outcome{kind: kindDeadLetter, reason: reason} }

// Abandon: the process is going away (an injected crash). The message is left unsettled, as a
// process that died would leave it: the server delivers it again once AckWait has passed.
func Abandon() Outcome { return Outcome{kind: kindAbandon} }

// String describes the outcome, for logs and tests.
func (o Outcome) String() string {
	switch o.kind {
	case kindAck:
		return "ack"
	case kindRetry:
		return fmt.Sprintf("retry after %s: %v", o.delay, o.err)
	case kindHold:
		return fmt.Sprintf("hold for %s", o.delay)
	case kindAbandon:
		return "abandon"
	default:
		return "dead-letter: " + o.reason
	}
}

// Delivery is one delivery of a message.
type Delivery struct {
	Msg  jetstream.Msg
	Meta *jetstream.MsgMetadata
	// Last is true when the consumer will not deliver the message again (its MaxDeliver is
	// reached): whatever the handler returns, this is its last chance.
	Last bool
}

// Handler processes one delivery. ctx is cancelled when Stop gives up waiting.
type Handler func(ctx context.Context, d Delivery) Outcome

// Config configures a Loop.
type Config struct {
	// Name names the loop in logs and is the dead-letter source (memmie.deadletter.<Name>).
	// Required.
	Name string
	// Stream is the stream consumed. Required.
	Stream string
	// Consumer is the durable consumer Start creates or updates and consumes. The handler's
	// package sets AckWait, MaxDeliver and MaxAckPending deliberately. AckPolicy is always
	// explicit. Defaults to none (no Durable): Start only starts the workers, and Add adds
	// consumers.
	Consumer jetstream.ConsumerConfig
	// Workers is the number of messages processed at once. Defaults to 1.
	Workers int
	// Key routes a message to a worker: messages with the same key are processed one at a
	// time, in delivery order. Defaults to nil: any free worker.
	Key func(jetstream.Msg) string
	// MaxFailures is the delivery at which a message whose handler returns Retry is
	// dead-lettered instead. Defaults to the consumer's MaxDeliver when that is positive, else
	// 20.
	MaxFailures int
	// RetryBackoff is the first wait after a Retry without a delay; it doubles with each
	// delivery up to MaxRetryBackoff. Defaults to 250 ms and 30 s.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// DeadLetter records poison messages. Required.
	DeadLetter *deadletter.Writer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Loop consumes one or more durable consumers with a handler and one pool of workers.
type Loop struct {
	js      jetstream.JetStream
	cfg     Config
	handler Handler
	log     *slog.Logger

	mu       sync.Mutex
	started  bool
	stopping atomic.Bool
	sources  map[string]*source
	readers  sync.WaitGroup
	workCtx  context.Context
	cancel   context.CancelFunc
	chans    []chan item // one per worker, when Key is set
	shared   chan item   // any free worker, when Key is nil
	workers  sync.WaitGroup
	stopHB   chan struct{}
	inflight map[jetstream.Msg]time.Time
}

// source is one consumer the loop reads.
type source struct {
	cfg         jetstream.ConsumerConfig
	opts        []jetstream.PullMessagesOpt
	maxFailures int
	ackWait     time.Duration

	mu       sync.Mutex // guards it
	it       jetstream.MessagesContext
	stopping atomic.Bool
	stop     chan struct{} // closed when the source is removed or the loop stops
	done     chan struct{} // closed when its reader has returned
	pending  sync.WaitGroup
}

type item struct {
	msg jetstream.Msg
	src *source
}

// New checks cfg and returns a loop. Start starts it.
func New(js jetstream.JetStream, cfg Config, h Handler) (*Loop, error) {
	switch {
	case js == nil:
		return nil, errors.New("consume: no JetStream context")
	case h == nil:
		return nil, errors.New("consume: no handler")
	case cfg.Name == "":
		return nil, errors.New("consume: Name is required")
	case cfg.Stream == "":
		return nil, fmt.Errorf("consume %s: Stream is required", cfg.Name)
	case cfg.DeadLetter == nil:
		return nil, fmt.Errorf("consume %s: DeadLetter is required", cfg.Name)
	case cfg.Workers < 0:
		return nil, fmt.Errorf("consume %s: Workers %d is negative", cfg.Name, cfg.Workers)
	}
	cfg.Workers = cmp.Or(cfg.Workers, 1)
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 250 * time.Millisecond
	}
	if cfg.MaxRetryBackoff <= 0 {
		cfg.MaxRetryBackoff = 30 * time.Second
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Loop{
		js:      js,
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger.With("component", cfg.Name),
	}, nil
}

// Start starts the workers, and consumes Config.Consumer when it names one. It returns once
// messages flow.
func (l *Loop) Start(ctx context.Context) error {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return fmt.Errorf("consume %s: already started", l.cfg.Name)
	}
	l.started = true
	l.stopping.Store(false)
	l.sources = map[string]*source{}
	l.workCtx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.stopHB = make(chan struct{})
	l.inflight = map[jetstream.Msg]time.Time{}
	l.chans, l.shared = nil, nil
	if l.cfg.Key != nil {
		l.chans = make([]chan item, l.cfg.Workers)
		for i := range l.chans {
			l.chans[i] = make(chan item, 4)
			l.workers.Add(1)
			go l.work(l.chans[i])
		}
	} else {
		// Any free worker takes the next message: one channel feeds them all.
		l.shared = make(chan item)
		for range l.cfg.Workers {
			l.workers.Add(1)
			go l.work(l.shared)
		}
	}
	go l.heartbeat(l.stopHB)
	l.mu.Unlock()

	if l.cfg.Consumer.Durable != "" {
		if err := l.Add(ctx, l.cfg.Consumer); err != nil {
			_ = l.Stop(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

func (l *Loop) work(ch <-chan item) {
	defer l.workers.Done()
	for it := range ch {
		l.process(it)
	}
}

// Add creates or updates a durable consumer on the loop's stream and consumes it with the
// loop's workers, until Remove or Stop. opts tune its pulls (after the loop's own batch size).
func (l *Loop) Add(ctx context.Context, cc jetstream.ConsumerConfig, opts ...jetstream.PullMessagesOpt) error {
	if cc.Durable == "" {
		return fmt.Errorf("consume %s: a consumer needs a Durable name", l.cfg.Name)
	}
	cc.AckPolicy = jetstream.AckExplicitPolicy
	src := &source{
		cfg:         cc,
		opts:        append([]jetstream.PullMessagesOpt{jetstream.PullMaxMessages(l.batch(cc))}, opts...),
		maxFailures: l.cfg.MaxFailures,
		ackWait:     cc.AckWait,
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if src.maxFailures <= 0 {
		src.maxFailures = 20
		if cc.MaxDeliver > 0 {
			src.maxFailures = cc.MaxDeliver
		}
	}
	if src.ackWait <= 0 {
		src.ackWait = 30 * time.Second // the server's default
	}
	l.mu.Lock()
	switch {
	case !l.started || l.stopping.Load():
		l.mu.Unlock()
		return fmt.Errorf("consume %s: add %s: the loop is not running", l.cfg.Name, cc.Durable)
	case l.sources[cc.Durable] != nil:
		l.mu.Unlock()
		return fmt.Errorf("consume %s: already consuming %s", l.cfg.Name, cc.Durable)
	}
	l.sources[cc.Durable] = src // reserved; no reader yet
	l.mu.Unlock()

	it, err := l.open(ctx, src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && (!l.started || l.stopping.Load() || l.sources[cc.Durable] != src) {
		it.Stop()
		err = fmt.Errorf("consume %s: add %s: the loop stopped meanwhile", l.cfg.Name, cc.Durable)
	}
	if err != nil {
		if l.sources[cc.Durable] == src {
			delete(l.sources, cc.Durable)
		}
		return err
	}
	src.mu.Lock()
	src.it = it
	src.mu.Unlock()
	l.readers.Add(1)
	go l.read(src)
	l.log.Debug("consuming", "stream", l.cfg.Stream, "consumer", cc.Durable, "workers", l.cfg.Workers)
	return nil
}

// Remove stops consuming the consumer called durable (it stays on the server): no new
// messages are pulled, messages pulled but not started are handed back, and it returns once
// the ones in progress are settled. When ctx ends first it returns ctx's error; the consumer
// is not pulled any more either way, and the messages in progress settle when they are done.
// Removing a consumer the loop does not consume does nothing.
func (l *Loop) Remove(ctx context.Context, durable string) error {
	l.mu.Lock()
	src := l.sources[durable]
	if src == nil {
		l.mu.Unlock()
		return nil
	}
	delete(l.sources, durable)
	adding := src.it == nil
	l.mu.Unlock()
	if adding {
		// Add is opening it: it finds the source removed and gives up.
		return nil
	}

	src.halt()
	settled := make(chan struct{})
	go func() {
		<-src.done
		src.pending.Wait()
		close(settled)
	}()
	select {
	case <-settled:
		l.log.Debug("stopped consuming", "consumer", durable)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("consume %s: remove %s: %w", l.cfg.Name, durable, ctx.Err())
	}
}

// Consumers returns the names of the consumers the loop reads, sorted.
func (l *Loop) Consumers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.sources))
	for name, src := range l.sources {
		if src.it != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// halt stops the source's pulls; its reader returns once the messages already pulled are
// handed to the workers (which hand them back).
func (s *source) halt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping.Swap(true) {
		return
	}
	close(s.stop)
	if s.it != nil {
		s.it.Drain()
	}
}

// batch is how many messages the loop asks for at a time: enough to keep every worker busy,
// never more than the consumer lets be unacknowledged.
func (l *Loop) batch(cc jetstream.ConsumerConfig) int {
	n := 2 * l.cfg.Workers
	if m := cc.MaxAckPending; m > 0 && n > m {
		n = m
	}
	return max(n, 1)
}

func (l *Loop) open(ctx context.Context, src *source) (jetstream.MessagesContext, error) {
	cons, err := l.js.CreateOrUpdateConsumer(ctx, l.cfg.Stream, src.cfg)
	if err != nil {
		return nil, fmt.Errorf("consume %s: consumer %s on %s: %w", l.cfg.Name, src.cfg.Durable, l.cfg.Stream, err)
	}
	it, err := cons.Messages(src.opts...)
	if err != nil {
		return nil, fmt.Errorf("consume %s: consumer %s on %s: %w", l.cfg.Name, src.cfg.Durable, l.cfg.Stream, err)
	}
	return it, nil
}

// read takes messages from the source's iterator and hands them to the workers until the
// iterator is drained. A consumer that goes away (deleted by an operator, a server that lost
// it) is created again.
func (l *Loop) read(src *source) {
	defer l.readers.Done()
	defer close(src.done)
	src.mu.Lock()
	it := src.it
	src.mu.Unlock()
	backoff := l.cfg.RetryBackoff
	for {
		msg, err := it.Next()
		if err != nil {
			if l.stopping.Load() || src.stopping.Load() {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || !isTransient(err) {
				l.log.Warn("consumer interrupted; opening it again", "consumer", src.cfg.Durable, "err", err, "in", backoff)
				if !l.wait(src, backoff) {
					return
				}
				backoff = min(2*backoff, l.cfg.MaxRetryBackoff)
				next, oerr := l.open(l.workCtx, src)
				if oerr != nil {
					l.log.Warn("reopen consumer", "consumer", src.cfg.Durable, "err", oerr)
					continue
				}
				src.mu.Lock()
				if src.stopping.Load() {
					src.mu.Unlock()
					next.Stop()
					return
				}
				src.it, it = next, next
				src.mu.Unlock()
			}
			continue
		}
		backoff = l.cfg.RetryBackoff
		l.track(msg)
		src.pending.Add(1)
		x := item{msg: msg, src: src}
		if l.cfg.Key == nil {
			l.shared <- x
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(l.cfg.Key(msg)))
		l.chans[h.Sum32()%uint32(len(l.chans))] <- x
	}
}

func isTransient(err error) bool {
	return errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, context.DeadlineExceeded)
}

// wait waits d, or less when the loop stops or the source is removed; it reports whether the
// source goes on.
func (l *Loop) wait(src *source, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !l.stopping.Load() && !src.stopping.Load()
	case <-src.stop:
		return false
	case <-l.workCtx.Done():
		return false
	}
}

func (l *Loop) track(msg jetstream.Msg) {
	l.mu.Lock()
	l.inflight[msg] = time.Now()
	l.mu.Unlock()
}

func (l *Loop) untrack(msg jetstream.Msg) {
	l.mu.Lock()
	delete(l.inflight, msg)
	l.mu.Unlock()
}

// heartbeatEvery is how often the loop tells the server that held messages are in progress:
// a third of the shortest AckWait of its consumers, so that a long HTTP call, or a message
// waiting for a busy worker, is not delivered again meanwhile.
func (l *Loop) heartbeatEvery() time.Duration {
	every := l.cfg.Consumer.AckWait
	if every <= 0 {
		every = 30 * time.Second
	}
	l.mu.Lock()
	for _, src := range l.sources {
		every = min(every, src.ackWait)
	}
	l.mu.Unlock()
	return max(every/3, 100*time.Millisecond)
}

func (l *Loop) heartbeat(stop <-chan struct{}) {
	every := l.heartbeatEvery()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			l.mu.Lock()
			var due []jetstream.Msg
			for msg, since := range l.inflight {
				if now.Sub(since) >= every {
					due = append(due, msg)
				}
			}
			l.mu.Unlock()
			for _, msg := range due {
				if err := msg.InProgress(); err != nil {
					l.log.Debug("in-progress", "subject", msg.Subject(), "err", err)
				}
			}
			every = l.heartbeatEvery()
			t.Reset(every)
		}
	}
}

// process runs the handler on one message and settles it.
func (l *Loop) process(x item) {
	msg, src := x.msg, x.src
	defer src.pending.Done()
	defer l.untrack(msg)
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack.
		l.log.Error("message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	log := l.log.With("subject", msg.Subject(), "seq", md.Sequence.Stream, "delivery", md.NumDelivered)
	if l.stopping.Load() || src.stopping.Load() {
		// Stopping: hand the message back rather than start new work. A nak with a delay,
		// unlike a plain one, is stored with the consumer: the message comes back at once
		// even when the server restarts meanwhile (a plain nak would wait for AckWait).
		if err := msg.NakWithDelay(time.Millisecond); err != nil {
			log.Debug("hand back", "err", err)
		}
		return
	}
	d := Delivery{Msg: msg, Meta: md, Last: src.cfg.MaxDeliver > 0 && md.NumDelivered >= uint64(src.cfg.MaxDeliver)}
	out := l.run(d)
	if out.kind == kindRetry && md.NumDelivered >= uint64(src.maxFailures) {
		out = DeadLetter(fmt.Sprintf("gave up after %d deliveries: %v", md.NumDelivered, out.err))
	}
	switch out.kind {
	case kindAck:
		err = msg.Ack()
	case kindHold:
		err = msg.NakWithDelay(out.delay)
	case kindRetry:
		delay := out.delay
		if delay <= 0 {
			delay = l.backoff(md.NumDelivered)
		}
		log.Warn("processing failed; will retry", "err", out.err, "in", delay)
		err = msg.NakWithDelay(delay)
	case kindDeadLetter:
		log.Warn("dead-lettering message", "reason", out.reason)
		if derr := l.cfg.DeadLetter.Record(l.workCtx, l.cfg.Name, msg, out.reason); derr != nil {
			log.Error("dead-letter failed; will retry", "err", derr)
			err = msg.NakWithDelay(l.backoff(md.NumDelivered))
			break
		}
		err = msg.Ack()
	case kindAbandon:
		log.Warn("message abandoned")
	}
	if err != nil {
		log.Warn("settle message", "outcome", out.String(), "err", err)
	}
}

// run calls the handler, turning a panic into a Retry (and, in the end, a dead letter).
func (l *Loop) run(d Delivery) (out Outcome) {
	defer func() {
		if r := recover(); r != nil {
			l.log.Error("handler panicked", "subject", d.Msg.Subject(), "panic", r, "stack", string(debug.Stack()))
			out = Retry(fmt.Errorf("panic: %v", r), 0)
		}
	}()
	return l.handler(l.workCtx, d)
}

func (l *Loop) backoff(delivered uint64) time.Duration {
	d := l.cfg.RetryBackoff
	for i := uint64(1); i < delivered && d < l.cfg.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, l.cfg.MaxRetryBackoff)
}

// Stop stops consuming: no new messages are taken, messages already taken but not started are
// handed back (nak), and the ones in progress finish. When ctx ends first, their context is
// cancelled and Stop waits for them to return.
func (l *Loop) Stop(ctx context.Context) error {
	l.mu.Lock()
	if !l.started {
		l.mu.Unlock()
		return nil
	}
	l.started = false
	l.stopping.Store(true)
	srcs := make([]*source, 0, len(l.sources))
	for _, src := range l.sources {
		srcs = append(srcs, src)
	}
	l.sources = map[string]*source{}
	l.mu.Unlock()

	for _, src := range srcs {
		src.halt()
	}
	done := make(chan struct{})
	go func() {
		// Every reader has returned before the workers' channels close: nothing sends on a
		// closed channel.
		l.readers.Wait()
		if l.shared != nil {
			close(l.shared)
		}
		for _, ch := range l.chans {
			close(ch)
		}
		l.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("consume %s: stop: %w", l.cfg.Name, ctx.Err())
		l.cancel()
		<-done
	}
	l.cancel()
	close(l.stopHB)
	return err
}
