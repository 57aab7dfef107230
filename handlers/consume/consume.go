// Package consume runs a handler over a durable JetStream pull consumer: a pool of workers,
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
// due yet: nak with an exact delay, not a failure) or DeadLetter (record, then ack).
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
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/handlers/deadletter"
)

type outcomeKind int

const (
	kindAck outcomeKind = iota
	kindRetry
	kindHold
	kindDeadLetter
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

// String describes the outcome, for logs and tests.
func (o Outcome) String() string {
	switch o.kind {
	case kindAck:
		return "ack"
	case kindRetry:
		return fmt.Sprintf("retry after %s: %v", o.delay, o.err)
	case kindHold:
		return fmt.Sprintf("hold for %s", o.delay)
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
	// Consumer is the durable consumer, created or updated by Start. Durable is required; the
	// handler's package sets AckWait, MaxDeliver and MaxAckPending deliberately. AckPolicy is
	// always explicit.
	Consumer jetstream.ConsumerConfig
	// Workers is the number of messages processed at once. Defaults to 1.
	Workers int
	// Key routes a message to a worker: messages with the same key are processed one at a
	// time, in delivery order. Defaults to nil: any free worker.
	Key func(jetstream.Msg) string
	// MaxFailures is the delivery at which a message whose handler returns Retry is
	// dead-lettered instead. Defaults to Consumer.MaxDeliver when that is positive, else 20.
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

// Loop consumes one durable consumer with a handler.
type Loop struct {
	js      jetstream.JetStream
	cfg     Config
	handler Handler
	log     *slog.Logger
	ackWait time.Duration

	mu       sync.Mutex
	started  bool
	stopping atomic.Bool
	it       jetstream.MessagesContext
	workCtx  context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed when the reader and every worker have returned
	stopHB   chan struct{}
	inflight map[jetstream.Msg]time.Time
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
	case cfg.Consumer.Durable == "":
		return nil, fmt.Errorf("consume %s: Consumer.Durable is required", cfg.Name)
	case cfg.DeadLetter == nil:
		return nil, fmt.Errorf("consume %s: DeadLetter is required", cfg.Name)
	case cfg.Workers < 0:
		return nil, fmt.Errorf("consume %s: Workers %d is negative", cfg.Name, cfg.Workers)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 20
		if cfg.Consumer.MaxDeliver > 0 {
			cfg.MaxFailures = cfg.Consumer.MaxDeliver
		}
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 250 * time.Millisecond
	}
	if cfg.MaxRetryBackoff <= 0 {
		cfg.MaxRetryBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Consumer.AckPolicy = jetstream.AckExplicitPolicy
	ackWait := cfg.Consumer.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second // the server's default
	}
	return &Loop{
		js:      js,
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger.With("component", cfg.Name),
		ackWait: ackWait,
	}, nil
}

// batch is how many messages the loop asks for at a time: enough to keep every worker busy,
// never more than the consumer lets be unacknowledged.
func (l *Loop) batch() int {
	n := 2 * l.cfg.Workers
	if m := l.cfg.Consumer.MaxAckPending; m > 0 && n > m {
		n = m
	}
	return max(n, 1)
}

// Start creates or updates the consumer and starts consuming. It returns once messages flow.
func (l *Loop) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return fmt.Errorf("consume %s: already started", l.cfg.Name)
	}
	it, err := l.open(ctx)
	if err != nil {
		return err
	}
	l.started = true
	l.stopping.Store(false)
	l.it = it
	l.workCtx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	l.stopHB = make(chan struct{})
	l.inflight = map[jetstream.Msg]time.Time{}

	chans := make([]chan jetstream.Msg, l.cfg.Workers)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan jetstream.Msg, 4)
		wg.Add(1)
		go func(ch <-chan jetstream.Msg) {
			defer wg.Done()
			for msg := range ch {
				l.process(msg)
			}
		}(chans[i])
	}
	shared := make(chan jetstream.Msg)
	if l.cfg.Key == nil {
		// Any free worker takes the next message: one channel feeds them all.
		for _, ch := range chans {
			wg.Add(1)
			go func(ch chan<- jetstream.Msg) {
				defer wg.Done()
				defer close(ch)
				for msg := range shared {
					ch <- msg
				}
			}(ch)
		}
	}
	go func() {
		l.read(chans, shared)
		wg.Wait()
		close(l.done)
	}()
	go l.heartbeat(l.stopHB)
	l.log.Debug("consuming", "stream", l.cfg.Stream, "consumer", l.cfg.Consumer.Durable, "workers", l.cfg.Workers)
	return nil
}

func (l *Loop) open(ctx context.Context) (jetstream.MessagesContext, error) {
	cons, err := l.js.CreateOrUpdateConsumer(ctx, l.cfg.Stream, l.cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("consume %s: consumer %s on %s: %w", l.cfg.Name, l.cfg.Consumer.Durable, l.cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(l.batch()))
	if err != nil {
		return nil, fmt.Errorf("consume %s: consumer %s on %s: %w", l.cfg.Name, l.cfg.Consumer.Durable, l.cfg.Stream, err)
	}
	return it, nil
}

// read takes messages from the iterator and hands them to the workers until the iterator is
// drained. A consumer that goes away (deleted by an operator, a server that lost it) is
// created again.
func (l *Loop) read(chans []chan jetstream.Msg, shared chan jetstream.Msg) {
	defer func() {
		if l.cfg.Key == nil {
			close(shared)
		} else {
			for _, ch := range chans {
				close(ch)
			}
		}
	}()
	l.mu.Lock()
	it := l.it
	l.mu.Unlock()
	backoff := l.cfg.RetryBackoff
	for {
		msg, err := it.Next()
		if err != nil {
			if l.stopping.Load() {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || !isTransient(err) {
				l.log.Warn("consumer interrupted; opening it again", "err", err, "in", backoff)
				if !l.wait(backoff) {
					return
				}
				backoff = min(2*backoff, l.cfg.MaxRetryBackoff)
				next, oerr := l.open(l.workCtx)
				if oerr != nil {
					l.log.Warn("reopen consumer", "err", oerr)
					continue
				}
				l.mu.Lock()
				if l.stopping.Load() {
					l.mu.Unlock()
					next.Stop()
					return
				}
				l.it, it = next, next
				l.mu.Unlock()
			}
			continue
		}
		backoff = l.cfg.RetryBackoff
		l.track(msg)
		if l.cfg.Key == nil {
			shared <- msg
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(l.cfg.Key(msg)))
		chans[h.Sum32()%uint32(len(chans))] <- msg
	}
}

func isTransient(err error) bool {
	return errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, context.DeadlineExceeded)
}

// wait waits d, or less when the loop stops; it reports whether the loop goes on.
func (l *Loop) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !l.stopping.Load()
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

// heartbeat tells the server that messages held longer than a third of AckWait are still in
// progress, so that a long HTTP call, or a message waiting for a busy worker, is not delivered
// again meanwhile.
func (l *Loop) heartbeat(stop <-chan struct{}) {
	every := l.ackWait / 3
	t := time.NewTicker(every)
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
		}
	}
}

// process runs the handler on one message and settles it.
func (l *Loop) process(msg jetstream.Msg) {
	defer l.untrack(msg)
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack.
		l.log.Error("message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	log := l.log.With("subject", msg.Subject(), "seq", md.Sequence.Stream, "delivery", md.NumDelivered)
	if l.stopping.Load() {
		// Stopping: hand the message back rather than start new work. A nak with a delay,
		// unlike a plain one, is stored with the consumer: the message comes back at once
		// even when the server restarts meanwhile (a plain nak would wait for AckWait).
		if err := msg.NakWithDelay(time.Millisecond); err != nil {
			log.Debug("hand back", "err", err)
		}
		return
	}
	d := Delivery{Msg: msg, Meta: md, Last: l.cfg.Consumer.MaxDeliver > 0 && md.NumDelivered >= uint64(l.cfg.Consumer.MaxDeliver)}
	out := l.run(d)
	if out.kind == kindRetry && md.NumDelivered >= uint64(l.cfg.MaxFailures) {
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
	it := l.it
	l.mu.Unlock()

	it.Drain()
	var err error
	select {
	case <-l.done:
	case <-ctx.Done():
		err = fmt.Errorf("consume %s: stop: %w", l.cfg.Name, ctx.Err())
		l.cancel()
		<-l.done
	}
	l.cancel()
	close(l.stopHB)
	return err
}
