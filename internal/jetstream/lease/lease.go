package lease

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
)

// DefaultTTL is how long a heartbeat or a lease lasts without renewal.
const DefaultTTL = 5 * time.Second

// HeaderTTL is the per-message TTL header (nats-server 2.11 and later).
const HeaderTTL = "Nats-TTL"

// ttlHeader returns d as a Nats-TTL value: whole seconds, rounded up.
func ttlHeader(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10) + "s"
}

func checkTTL(what string, ttl, every time.Duration) error {
	switch {
	case ttl < 2*time.Second:
		return fmt.Errorf("%s: TTL %s is under 2 seconds", what, ttl)
	case every <= 0 || every > ttl/2:
		return fmt.Errorf("%s: Every %s is not within 0 and TTL/2 (%s)", what, every, ttl/2)
	}
	return nil
}

// Config configures a Lease.
type Config struct {
	// Stream is the leases stream. Defaults to streams.Leases.
	Stream string
	// Role names the lease: memmie.leases.leader.<Role>. Required.
	Role string
	// Holder names this process. Required.
	Holder string
	// TTL is how long the lease lasts without renewal. Defaults to DefaultTTL.
	TTL time.Duration
	// Every is how often the holder renews, and others look whether they may take it.
	// Defaults to TTL/5.
	Every time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// record is the body of a lease message.
type record struct {
	// Holder is the process that holds the lease; empty once released.
	Holder string    `json:"holder"`
	At     time.Time `json:"at"`
}

// Lease campaigns for a leader lease and keeps it while it can.
type Lease struct {
	js      jetstream.JetStream
	cfg     Config
	log     *slog.Logger
	subject string
	changes chan struct{}

	mu         sync.Mutex
	held       bool
	seq        uint64    // the sequence of our lease message, while held
	validUntil time.Time // when held, we count on it until then
	seenSeq    uint64    // another holder's lease as we last saw it,
	seenAt     time.Time // and when we first saw that sequence
	life       lifecycle.Service
}

// New checks cfg and returns a lease. Start starts campaigning.
func New(js jetstream.JetStream, cfg Config) (*Lease, error) {
	cfg.Stream = cmp.Or(cfg.Stream, streams.Leases)
	cfg.TTL = cmp.Or(cfg.TTL, DefaultTTL)
	cfg.Every = cmp.Or(cfg.Every, cfg.TTL/5)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	subject, err := streams.LeaderSubject(cfg.Role)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if _, err := streams.MemberSubject(cfg.Holder); err != nil {
		return nil, fmt.Errorf("lease %s: holder: %w", cfg.Role, err)
	}
	if err := checkTTL("lease "+cfg.Role, cfg.TTL, cfg.Every); err != nil {
		return nil, err
	}
	return &Lease{
		life:    lifecycle.Service{Name: "lease " + cfg.Role},
		js:      js,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "lease", "role", cfg.Role, "holder", cfg.Holder),
		subject: subject,
		changes: make(chan struct{}, 1),
	}, nil
}

// Start makes a first attempt at the lease, then keeps campaigning (or renewing) every
// Config.Every until Stop.
func (l *Lease) Start(ctx context.Context) error {
	return l.life.Start(ctx, func(ctx context.Context) error { l.tick(ctx); return nil }, l.run)
}

func (l *Lease) run(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(l.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			tctx, cancel := context.WithTimeout(ctx, l.cfg.Every)
			l.tick(tctx)
			cancel()
		}
	}
}

// Stop stops campaigning and releases the lease if held, so that another process takes it at
// once rather than after its TTL.
func (l *Lease) Stop(ctx context.Context) error {
	return l.life.Stop(ctx, l.release)
}

// release gives the lease up, if held, so that another process takes it at once.
func (l *Lease) release(ctx context.Context) error {
	l.mu.Lock()
	held, seq := l.held, l.seq
	l.set(false, 0, time.Time{})
	l.mu.Unlock()
	if !held {
		return nil
	}
	if _, err := l.publish(ctx, "", seq); err != nil && !errors.Is(err, stream.ErrConflict) {
		return fmt.Errorf("lease %s: release: %w", l.cfg.Role, err)
	}
	l.log.Info("lease released")
	return nil
}

// Held reports whether this process holds the lease now.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && time.Now().Before(l.validUntil)
}

// ValidUntil returns until when this process counts on the lease: the time it sent its last
// renewal plus the TTL, less one renewal period, which no other process can take it before.
// It is zero when the lease is not held. Work done for the lease (a publish) should end by
// then: give it a context with this deadline.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return time.Time{}
	}
	return l.validUntil
}

// Changes receives a value when the lease is won or lost (or may have run out). It is
// buffered by one: a reader that looks at Held after each value sees every change.
func (l *Lease) Changes() <-chan struct{} { return l.changes }

// set changes the state; l.mu is held.
func (l *Lease) set(held bool, seq uint64, validUntil time.Time) {
	changed := held != l.held
	l.held, l.seq, l.validUntil = held, seq, validUntil
	if changed {
		select {
		case l.changes <- struct{}{}:
		default:
		}
	}
}

// tick reads the lease and takes, renews or watches it.
func (l *Lease) tick(ctx context.Context) {
	now := time.Now()
	last, err := stream.LastBySubject(ctx, l.js, l.cfg.Stream, l.subject)
	var cur record
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		l.try(ctx, 0)
		return
	case err != nil:
		l.log.Warn("read lease", "err", err)
		l.expire(now)
		return
	}
	if err := json.Unmarshal(last.Data, &cur); err != nil {
		l.log.Warn("unreadable lease; taking it over", "err", err)
		l.try(ctx, last.Sequence)
		return
	}
	if cur.Holder == "" || cur.Holder == l.cfg.Holder {
		// Released, ours to renew, or ours from before a restart of this process.
		l.try(ctx, last.Sequence)
		return
	}
	l.mu.Lock()
	if l.held {
		l.log.Warn("lease lost", "to", cur.Holder)
		l.set(false, 0, time.Time{})
	}
	if l.seenSeq != last.Sequence {
		l.seenSeq, l.seenAt = last.Sequence, now
	}
	stale := now.Sub(l.seenAt) >= l.cfg.TTL
	l.mu.Unlock()
	if stale {
		// Not renewed for a whole TTL by our clock: its holder stopped counting on it.
		l.log.Info("lease expired; taking it over", "from", cur.Holder)
		l.try(ctx, last.Sequence)
	}
}

// expire drops a lease whose renewals failed for too long.
func (l *Lease) expire(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held && !now.Before(l.validUntil) {
		l.log.Warn("lease not renewed in time; standing down")
		l.set(false, 0, time.Time{})
	}
}

// try takes or renews the lease, expecting the subject's last sequence to be expect.
func (l *Lease) try(ctx context.Context, expect uint64) {
	sent := time.Now()
	seq, err := l.publish(ctx, l.cfg.Holder, expect)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		if !l.held {
			l.log.Info("lease acquired")
		}
		l.set(true, seq, sent.Add(l.cfg.TTL-l.cfg.Every))
	case errors.Is(err, stream.ErrConflict):
		// Another process got there first.
		if l.held {
			l.log.Warn("lease lost")
		}
		l.set(false, 0, time.Time{})
	default:
		l.log.Warn("renew lease", "err", err)
		if l.held && !sent.Before(l.validUntil) {
			l.set(false, 0, time.Time{})
		}
	}
}

func (l *Lease) publish(ctx context.Context, holder string, expect uint64) (uint64, error) {
	data, err := json.Marshal(record{Holder: holder, At: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	ack, err := stream.Append(ctx, l.js, l.cfg.Stream, []stream.Msg{{
		Subject: l.subject,
		Data:    data,
		ID:      l.cfg.Holder + "-" + nuid.Next(),
		Header:  nats.Header{HeaderTTL: []string{ttlHeader(l.cfg.TTL)}},
	}}, stream.Expect{FilterSubject: l.subject, LastSubjectSeq: expect})
	if err != nil {
		return 0, err
	}
	return ack.LastSeq, nil
}
