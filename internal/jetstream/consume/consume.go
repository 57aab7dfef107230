// Package consume runs a handler over durable JetStream pull consumers: a pool of workers,
// per-key ordering, acknowledgements from the handler's outcome, progress heartbeats for long
// work, dead letters for poison messages, panic recovery, middleware, and a clean drain on
// Stop.
//
//	loop, err := consume.New(js, consume.Config{
//		Name:       "runner",
//		Stream:     "MEMMIE_EXECUTIONS",
//		Consumer:   jetstream.ConsumerConfig{Durable: "runner", AckWait: 5 * time.Second, MaxDeliver: -1, ...},
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
// Retry (a transient failure: nak with a capped backoff, for as long as it takes; never a dead
// letter), Hold (not due yet: nak with an exact delay), DeadLetter (record, then ack) or
// Abandon (an injected crash: leave it unsettled). A consumer whose handler may Retry must
// have MaxDeliver -1: the server drops a message nak'd past MaxDeliver, so on a consumer with
// a positive MaxDeliver a Retry on the last delivery is dead-lettered instead.
//
// A panic in the handler is a bug, not an outage: the message is retried with the backoff
// (the panic may come from a state that passes), and dead-lettered once its handler panicked
// Config.MaxPanics times in this process.
//
// The loop pulls only as many messages as it has free workers (per consumer, when Key is
// set), so that a message is never held by a busy process while another could take it, and
// every message it holds is in a worker or waiting for its key's worker: those get InProgress
// every quarter of AckWait, so a short AckWait redelivers a crashed process's work soon
// without redelivering long work.
//
// One loop may consume several consumers with the same workers and handler, added and removed
// while it runs (the orchestrator consumes the inbox partitions its process is assigned):
//
//	err = loop.Add(ctx, jetstream.ConsumerConfig{Durable: "orchestrator-3", ...})
//	err = loop.Remove(ctx, "orchestrator-3") // stops pulling, waits for its messages to settle
//
// Why not Watermill's JetStream subscriber: it hands a handler one message at a time per
// subscription, acks or naks with one static delay policy, and exposes neither the delivery
// metadata (NumDelivered) nor InProgress (needed to keep a long HTTP call's message from
// being redelivered) nor a per-message NakWithDelay (needed to hold a timer until it is due).
// Its router middleware would sit on top of exactly this loop; Config.Middleware is the same
// seam here.
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
	"github.com/memmie/memmie/internal/lifecycle"
)

type outcomeKind int

const (
	kindAck outcomeKind = iota
	kindRetry
	kindHold
	kindDeadLetter
	kindAbandon
	kindPanic
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

// Retry: processing failed for a reason that passes (NATS or a stream unavailable, a
// timeout). The message is delivered again after delay, or after the loop's backoff when
// delay is 0, for as long as it takes: a Retry is logged and counted, never dead-lettered
// (but see the package documentation on MaxDeliver).
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
	case kindPanic:
		return o.err.Error()
	default:
		return "dead-letter: " + o.reason
	}
}

// Delivery is one delivery of a message.
type Delivery struct {
	Msg  jetstream.Msg
	Meta *jetstream.MsgMetadata
	// Last is true when the consumer will not deliver the message again (its MaxDeliver is
	// positive and reached): whatever the handler returns, this is its last chance. Never
	// true on a consumer with MaxDeliver -1.
	Last bool
}

// Handler processes one delivery. ctx is cancelled when Stop gives up waiting.
type Handler func(ctx context.Context, d Delivery) Outcome

// Defaults of Config.
const (
	DefaultRetryBackoff    = 250 * time.Millisecond
	DefaultMaxRetryBackoff = 10 * time.Second
	DefaultMaxPanics       = 5
	DefaultPullWait        = 250 * time.Millisecond
)

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
	// Workers is the number of messages processed at once. Without Key, it is also the most
	// messages the loop holds: it pulls only for free workers. Defaults to 1.
	Workers int
	// Key routes a message to a worker: messages with the same key are processed one at a
	// time, in delivery order. A consumer then holds at most twice Workers messages (fewer
	// when its MaxAckPending is lower), waiting for their keys' workers. Defaults to nil: any
	// free worker.
	Key func(jetstream.Msg) string
	// RetryBackoff is the first wait after a Retry without a delay; it doubles with each
	// delivery up to MaxRetryBackoff, which bounds how long the loop takes to notice that an
	// outage has ended. Defaults to DefaultRetryBackoff and DefaultMaxRetryBackoff.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// MaxPanics is how many times the handler may panic on one message, in this process,
	// before the message is dead-lettered. Defaults to DefaultMaxPanics.
	MaxPanics int
	// PullWait is how long one pull request waits for messages before the loop asks again,
	// and so how long Stop and Remove wait for the pull in progress: it is not cut short,
	// because the messages the server sends it after that would be lost until AckWait.
	// Defaults to DefaultPullWait.
	PullWait time.Duration
	// Middleware wraps the handler, Middleware[0] outermost: metrics, tracing and logging
	// see every delivery and its outcome. The loop's panic recovery sits inside all of them,
	// so that a handler's panic reaches them as an outcome (its String starts with "panic:")
	// rather than unwinding through them; a panic in a middleware is recovered too. Defaults
	// to none.
	Middleware []func(Handler) Handler
	// DeadLetter records poison messages. Required.
	DeadLetter *deadletter.Writer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats counts what a loop did since it was created.
type Stats struct {
	// Handled counts deliveries given to the handler.
	Handled uint64 `json:"handled"`
	// Retried counts transient failures: deliveries nak'd to be tried again after a backoff.
	Retried uint64 `json:"retried"`
	// DeadLettered counts messages recorded as poison.
	DeadLettered uint64 `json:"dead_lettered"`
	// Panics counts handler panics.
	Panics uint64 `json:"panics"`
}

// Loop consumes one or more durable consumers with a handler and one pool of workers.
type Loop struct {
	js      jetstream.JetStream
	cfg     Config
	handler Handler
	log     *slog.Logger

	handled, retried, deadLettered, panics atomic.Uint64

	mu       sync.Mutex
	started  bool
	stopping atomic.Bool
	sources  map[string]*source
	readers  sync.WaitGroup
	workCtx  context.Context
	cancel   context.CancelFunc
	chans    []chan item   // one per worker, when Key is set
	shared   chan item     // any free worker, when Key is nil
	slots    chan struct{} // free workers, when Key is nil: a token per worker
	workers  sync.WaitGroup
	life     lifecycle.Service
	inflight map[jetstream.Msg]time.Time
	// panicked counts the panics per message (consumer and stream sequence) until the
	// message is settled otherwise or dead-lettered.
	panicked map[panicKey]int
}

type panicKey struct {
	durable string
	seq     uint64
}

// source is one consumer the loop reads.
type source struct {
	cfg     jetstream.ConsumerConfig
	opts    []jetstream.FetchOpt
	ackWait time.Duration
	// slots are the messages the source may hold: the loop's free workers, or its own
	// budget when Key is set. A token is taken before a message is pulled and given back
	// when it is settled.
	slots chan struct{}

	opened   bool // under Loop.mu: Add has opened it
	mu       sync.Mutex
	cons     jetstream.Consumer // guarded by mu
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
	case cfg.MaxPanics < 0:
		return nil, fmt.Errorf("consume %s: MaxPanics %d is negative", cfg.Name, cfg.MaxPanics)
	}
	for i, mw := range cfg.Middleware {
		if mw == nil {
			return nil, fmt.Errorf("consume %s: Middleware[%d] is nil", cfg.Name, i)
		}
	}
	cfg.Workers = cmp.Or(cfg.Workers, 1)
	cfg.MaxPanics = cmp.Or(cfg.MaxPanics, DefaultMaxPanics)
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.MaxRetryBackoff <= 0 {
		cfg.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	cfg.MaxRetryBackoff = max(cfg.MaxRetryBackoff, cfg.RetryBackoff)
	if cfg.PullWait <= 0 {
		cfg.PullWait = DefaultPullWait
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	l := &Loop{
		life: lifecycle.Service{Name: "consume " + cfg.Name},
		js:   js,
		cfg:  cfg,
		log:  cfg.Logger.With("component", cfg.Name),
	}
	// The recoverer is innermost: the middleware see a panic as an outcome.
	l.handler = l.recoverer(h)
	for i := len(cfg.Middleware) - 1; i >= 0; i-- {
		l.handler = cfg.Middleware[i](l.handler)
	}
	return l, nil
}

// Stats returns the loop's counters.
func (l *Loop) Stats() Stats {
	return Stats{
		Handled:      l.handled.Load(),
		Retried:      l.retried.Load(),
		DeadLettered: l.deadLettered.Load(),
		Panics:       l.panics.Load(),
	}
}

// Start starts the workers, and consumes Config.Consumer when it names one. It returns once
// messages flow.
func (l *Loop) Start(ctx context.Context) error {
	if err := l.life.Start(ctx, l.setup, l.keepAlive); err != nil {
		return err
	}
	if l.cfg.Consumer.Durable != "" {
		if err := l.Add(ctx, l.cfg.Consumer); err != nil {
			_ = l.Stop(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

// setup starts the workers.
func (l *Loop) setup(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started = true
	l.stopping.Store(false)
	l.sources = map[string]*source{}
	l.workCtx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.inflight = map[jetstream.Msg]time.Time{}
	l.panicked = map[panicKey]int{}
	l.chans, l.shared, l.slots = nil, nil, nil
	if l.cfg.Key != nil {
		l.chans = make([]chan item, l.cfg.Workers)
		for i := range l.chans {
			l.chans[i] = make(chan item, 8)
			l.workers.Add(1)
			go l.work(l.chans[i])
		}
	} else {
		// Any free worker takes the next message: one channel feeds them all, and a
		// message is pulled only once a worker is free for it.
		l.shared = make(chan item)
		l.slots = newSlots(l.cfg.Workers)
		for range l.cfg.Workers {
			l.workers.Add(1)
			go l.work(l.shared)
		}
	}
	return nil
}

// keepAlive keeps the messages the loop holds alive until the loop stops, then waits for them to
// settle: the readers return (Stop has halted them), the workers finish what they hold and
// hand back the rest. Heartbeats go on meanwhile. When Stop gives up waiting (ctx ends), the
// workers' context is cancelled.
func (l *Loop) keepAlive(ctx context.Context, stop <-chan struct{}) {
	hbStop, hbDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(hbDone)
		l.heartbeat(hbStop)
	}()
	<-stop
	giveUp := context.AfterFunc(ctx, l.cancel)
	defer giveUp()
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
	l.cancel()
	close(hbStop)
	<-hbDone
}

func newSlots(n int) chan struct{} {
	ch := make(chan struct{}, n)
	for range n {
		ch <- struct{}{}
	}
	return ch
}

func (l *Loop) work(ch <-chan item) {
	defer l.workers.Done()
	for it := range ch {
		l.process(it)
	}
}

// Add creates or updates a durable consumer on the loop's stream and consumes it with the
// loop's workers, until Remove or Stop. opts tune its pulls (a priority group, for one); the
// loop sets the batch and the wait (Config.PullWait) itself.
func (l *Loop) Add(ctx context.Context, cc jetstream.ConsumerConfig, opts ...jetstream.FetchOpt) error {
	if cc.Durable == "" {
		return fmt.Errorf("consume %s: a consumer needs a Durable name", l.cfg.Name)
	}
	cc.AckPolicy = jetstream.AckExplicitPolicy
	src := &source{
		cfg:     cc,
		opts:    opts,
		ackWait: cc.AckWait,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
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
	src.slots = l.slots
	if src.slots == nil {
		src.slots = newSlots(l.budget(cc))
	}
	l.sources[cc.Durable] = src // reserved; no reader yet
	l.mu.Unlock()

	cons, err := l.open(ctx, src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && (!l.started || l.stopping.Load() || l.sources[cc.Durable] != src) {
		err = fmt.Errorf("consume %s: add %s: the loop stopped meanwhile", l.cfg.Name, cc.Durable)
	}
	if err != nil {
		if l.sources[cc.Durable] == src {
			delete(l.sources, cc.Durable)
		}
		return err
	}
	src.setConsumer(cons)
	src.opened = true
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
	adding := !src.opened
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
		if src.opened {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (s *source) setConsumer(c jetstream.Consumer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cons = c
}

func (s *source) consumer() jetstream.Consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cons
}

// halt stops the source's pulls; its reader returns once the pull in progress has ended and
// its messages are handed to the workers (which hand them back).
func (s *source) halt() {
	if s.stopping.Swap(true) {
		return
	}
	close(s.stop)
}

// budget is how many messages a keyed consumer may hold: enough to keep the workers busy,
// never more than the consumer lets be unacknowledged.
func (l *Loop) budget(cc jetstream.ConsumerConfig) int {
	n := 2 * l.cfg.Workers
	if m := cc.MaxAckPending; m > 0 && n > m {
		n = m
	}
	return max(n, 1)
}

func (l *Loop) open(ctx context.Context, src *source) (jetstream.Consumer, error) {
	cons, err := l.js.CreateOrUpdateConsumer(ctx, l.cfg.Stream, src.cfg)
	if err != nil {
		return nil, fmt.Errorf("consume %s: consumer %s on %s: %w", l.cfg.Name, src.cfg.Durable, l.cfg.Stream, err)
	}
	return cons, nil
}

// take waits for a free slot, then takes the others that are free too; it returns 0 when
// the source stops.
func (l *Loop) take(src *source) int {
	select {
	case <-src.slots:
	case <-src.stop:
		return 0
	}
	n := 1
	for n < cap(src.slots) {
		select {
		case <-src.slots:
			n++
		default:
			return n
		}
	}
	return n
}

func (src *source) give(n int) {
	for range n {
		src.slots <- struct{}{}
	}
}

// read pulls as many messages as the source has free slots and hands them to the workers,
// until the source stops. A consumer that goes away (deleted by an operator, a server that
// lost it) is created again.
func (l *Loop) read(src *source) {
	defer l.readers.Done()
	defer close(src.done)
	backoff := l.cfg.RetryBackoff
	for {
		n := l.take(src)
		if n == 0 {
			return
		}
		got, err := l.pull(src, n)
		src.give(n - got)
		if src.stopping.Load() || l.stopping.Load() {
			return
		}
		if err == nil || errors.Is(err, jetstream.ErrPinIDMismatch) {
			// A mismatched pin: another client had the partition; ask again, unpinned.
			backoff = l.cfg.RetryBackoff
			continue
		}
		l.log.Warn("pull interrupted; opening the consumer again", "consumer", src.cfg.Durable, "err", err, "in", backoff)
		if !l.wait(src, backoff) {
			return
		}
		backoff = min(2*backoff, l.cfg.MaxRetryBackoff)
		cons, oerr := l.open(l.workCtx, src)
		if oerr != nil {
			l.log.Warn("reopen consumer", "consumer", src.cfg.Durable, "err", oerr)
			continue
		}
		src.setConsumer(cons)
	}
}

// pull fetches up to n messages and hands each to a worker as it arrives. It returns how
// many it got.
func (l *Loop) pull(src *source, n int) (int, error) {
	batch, err := src.consumer().Fetch(n, append(slices.Clip(src.opts), jetstream.FetchMaxWait(l.cfg.PullWait))...)
	if err != nil {
		return 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		l.track(msg)
		src.pending.Add(1)
		x := item{msg: msg, src: src}
		if l.cfg.Key == nil {
			l.shared <- x // a worker is free: its slot was taken for this message
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(l.cfg.Key(msg)))
		l.chans[h.Sum32()%uint32(len(l.chans))] <- x
	}
	return got, batch.Error()
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

// heartbeatEvery is how often the loop tells the server that the messages it holds are in
// progress: a quarter of the shortest AckWait of its consumers. A message gets its first
// InProgress within 3/8 of AckWait, and the next ones every quarter.
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
	return max(every/4, 100*time.Millisecond)
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
				if now.Sub(since) >= every/2 {
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
	defer src.give(1)
	defer src.pending.Done()
	defer l.untrack(msg)
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to ack.
		l.log.Error("message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	// Built only when a line is written: most messages log nothing, and With formats its
	// attributes at once.
	log := func() *slog.Logger {
		return l.log.With("subject", msg.Subject(), "seq", md.Sequence.Stream, "delivery", md.NumDelivered)
	}
	if l.stopping.Load() || src.stopping.Load() {
		// Stopping: hand the message back rather than start new work. A nak with a delay,
		// unlike a plain one, is stored with the consumer: the message comes back soon
		// even when the server restarts meanwhile (a plain nak would wait for AckWait).
		// The delay outlasts this loop's last pull, which would take it back only to hand
		// it back again, a delivery each time.
		if err := msg.NakWithDelay(l.cfg.PullWait); err != nil {
			log().Debug("hand back", "err", err)
		}
		return
	}
	d := Delivery{Msg: msg, Meta: md, Last: src.cfg.MaxDeliver > 0 && md.NumDelivered >= uint64(src.cfg.MaxDeliver)}
	l.handled.Add(1)
	out := l.run(d)
	key := panicKey{src.cfg.Durable, md.Sequence.Stream}
	if out.kind == kindPanic {
		l.panics.Add(1)
		l.mu.Lock()
		l.panicked[key]++
		n := l.panicked[key]
		l.mu.Unlock()
		if n >= l.cfg.MaxPanics {
			out = DeadLetter(fmt.Sprintf("the handler panicked %d times: %v", n, out.err))
		}
	}
	if out.kind != kindPanic {
		l.mu.Lock()
		delete(l.panicked, key)
		l.mu.Unlock()
	}
	if (out.kind == kindRetry || out.kind == kindPanic) && d.Last {
		// A nak past MaxDeliver would drop the message without a word: record it instead.
		out = DeadLetter(fmt.Sprintf("failed on its last delivery (MaxDeliver %d): %v", src.cfg.MaxDeliver, out.err))
	}
	switch out.kind {
	case kindAck:
		err = msg.Ack()
	case kindHold:
		err = msg.NakWithDelay(out.delay)
	case kindRetry, kindPanic:
		delay := out.delay
		if delay <= 0 {
			delay = l.backoff(md.NumDelivered)
		}
		if l.stopping.Load() || src.stopping.Load() {
			delay = max(delay, l.cfg.PullWait) // not back into this loop's last pull
		}
		l.retried.Add(1)
		log().Warn("processing failed; will retry", "err", out.err, "in", delay)
		err = msg.NakWithDelay(delay)
	case kindDeadLetter:
		log().Warn("dead-lettering message", "reason", out.reason)
		if derr := l.cfg.DeadLetter.Record(l.workCtx, l.cfg.Name, msg, out.reason); derr != nil {
			log().Error("dead-letter failed; will retry", "err", derr)
			err = msg.NakWithDelay(l.backoff(md.NumDelivered))
			break
		}
		l.deadLettered.Add(1)
		err = msg.Ack()
	case kindAbandon:
		log().Warn("message abandoned")
	}
	if err != nil {
		log().Warn("settle message", "outcome", out.String(), "err", err)
	}
}

// recoverer turns a panic of h into a panic outcome.
func (l *Loop) recoverer(h Handler) Handler {
	return func(ctx context.Context, d Delivery) (out Outcome) {
		defer func() {
			if r := recover(); r != nil {
				l.log.Error("handler panicked", "subject", d.Msg.Subject(), "panic", r, "stack", string(debug.Stack()))
				out = Outcome{kind: kindPanic, err: fmt.Errorf("panic: %v", r)}
			}
		}()
		return h(ctx, d)
	}
}

// run calls the handler with its middleware; a panic in a middleware is a panic outcome too.
func (l *Loop) run(d Delivery) (out Outcome) {
	defer func() {
		if r := recover(); r != nil {
			l.log.Error("middleware panicked", "subject", d.Msg.Subject(), "panic", r, "stack", string(debug.Stack()))
			out = Outcome{kind: kindPanic, err: fmt.Errorf("panic: %v", r)}
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
	return l.life.Stop(ctx, nil)
}
