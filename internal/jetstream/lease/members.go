package lease

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events/streams"
)

// MembersConfig configures Members.
type MembersConfig struct {
	// Stream is the leases stream. Defaults to streams.Leases.
	Stream string
	// ID names this process among the members: a subject token, unique among the live
	// processes. Required.
	ID string
	// TTL is how long a process counts as alive after its last heartbeat. Defaults to
	// DefaultTTL.
	TTL time.Duration
	// Every is how often the process renews its heartbeat and looks at the others'.
	// Defaults to TTL/5.
	Every time.Duration
	// OnChange is called with the live members, sorted, whenever they change: once from
	// Start, then from the members' goroutine. It should return quickly. Optional.
	OnChange func(live []string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Members keeps this process's heartbeat and follows the live processes.
type Members struct {
	js      jetstream.JetStream
	cfg     MembersConfig
	log     *slog.Logger
	subject string

	mu         sync.Mutex
	live       []string
	stream     jetstream.Stream
	stop, done chan struct{}
}

// NewMembers checks cfg and returns Members. Start joins.
func NewMembers(js jetstream.JetStream, cfg MembersConfig) (*Members, error) {
	cfg.Stream = cmp.Or(cfg.Stream, streams.Leases)
	cfg.TTL = cmp.Or(cfg.TTL, DefaultTTL)
	cfg.Every = cmp.Or(cfg.Every, cfg.TTL/5)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	subject, err := streams.MemberSubject(cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	if err := checkTTL("members", cfg.TTL, cfg.Every); err != nil {
		return nil, err
	}
	return &Members{js: js, cfg: cfg, log: cfg.Logger.With("component", "members", "process_id", cfg.ID), subject: subject}, nil
}

// Start writes the first heartbeat, reads the live members (calling OnChange), and keeps
// both up to date until Stop.
func (m *Members) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.stop != nil {
		m.mu.Unlock()
		return errors.New("members: already started")
	}
	m.live = nil
	m.mu.Unlock()
	s, err := m.js.Stream(ctx, m.cfg.Stream)
	if err != nil {
		return fmt.Errorf("members: stream %s: %w", m.cfg.Stream, err)
	}
	if err := m.heartbeat(ctx); err != nil {
		return err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	m.mu.Lock()
	m.stream = s
	m.stop, m.done = stop, done
	m.mu.Unlock()
	if err := m.refresh(ctx); err != nil {
		m.log.Warn("read members", "err", err)
	}
	go m.run(stop, done)
	return nil
}

func (m *Members) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Every)
		if err := m.heartbeat(ctx); err != nil {
			m.log.Warn("heartbeat", "err", err)
		}
		if err := m.refresh(ctx); err != nil {
			m.log.Warn("read members", "err", err)
		}
		cancel()
	}
}

// Stop stops the heartbeats and deletes this process's, so that the others take over its
// share at once rather than after the TTL.
func (m *Members) Stop(ctx context.Context) error {
	m.mu.Lock()
	stop, done, s := m.stop, m.done, m.stream
	m.stop = nil
	m.mu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("members: stop: %w", ctx.Err())
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(m.subject)); err != nil {
		return fmt.Errorf("members: leave: %w", err)
	}
	return nil
}

// Live returns the live members, sorted.
func (m *Members) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.live)
}

func (m *Members) heartbeat(ctx context.Context) error {
	msg := nats.NewMsg(m.subject)
	msg.Header.Set(HeaderTTL, ttlHeader(m.cfg.TTL))
	msg.Data = []byte(time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := m.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(m.cfg.Stream)); err != nil {
		return fmt.Errorf("members: heartbeat %s: %w", m.subject, err)
	}
	return nil
}

// refresh reads the heartbeats still stored: the live members.
func (m *Members) refresh(ctx context.Context) error {
	m.mu.Lock()
	s := m.stream
	m.mu.Unlock()
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectMembers))
	if err != nil {
		return fmt.Errorf("members: %w", err)
	}
	prefix := strings.TrimSuffix(streams.SubjectMembers, "*")
	live := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		if id, ok := strings.CutPrefix(subject, prefix); ok {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	m.mu.Lock()
	changed := !slices.Equal(live, m.live)
	m.live = live
	m.mu.Unlock()
	if changed {
		m.log.Info("members changed", "live", live)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(slices.Clone(live))
		}
	}
	return nil
}

// Assign returns the partitions, of n, that self owns among the members: each partition goes
// to the member with the highest rendezvous hash of (member, partition). It is empty when self
// is not a member.
func Assign(n int, members []string, self string) []int {
	if !slices.Contains(members, self) {
		return nil
	}
	var mine []int
	for p := range n {
		best, bestHash := "", uint64(0)
		for _, m := range members {
			if h := score(m, p); best == "" || h > bestHash || (h == bestHash && m < best) {
				best, bestHash = m, h
			}
		}
		if best == self {
			mine = append(mine, p)
		}
	}
	return mine
}

// score is the rendezvous hash of a member and a partition: FNV-1a of both, mixed by
// splitmix64's finaliser so that similar names spread.
func score(member string, partition int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	var b [9]byte
	b[0] = '/'
	binary.BigEndian.PutUint64(b[1:], uint64(partition))
	h.Write(b[:])
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
