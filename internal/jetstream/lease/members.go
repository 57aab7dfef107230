package lease

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
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
	"github.com/nats-io/nuid"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
)

// ErrIDInUse is returned by Members.Start when another live process has the same ID.
var ErrIDInUse = errors.New("process id in use by another live process")

// heartbeat is the body of a heartbeat message.
type heartbeat struct {
	// Instance is a random nonce of the running process: two processes with the same ID
	// have different ones. Empty in heartbeats written before it existed.
	Instance string    `json:"instance"`
	At       time.Time `json:"at"`
}

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

	mu       sync.Mutex
	instance string // this run's nonce, new at each Start
	seq      uint64 // the sequence of our last heartbeat
	live     []string
	stream   jetstream.Stream
	life     lifecycle.Service
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
	return &Members{life: lifecycle.Service{Name: "members"}, js: js, cfg: cfg, log: cfg.Logger.With("component", "members", "process_id", cfg.ID), subject: subject}, nil
}

// Start writes the first heartbeat, reads the live members (calling OnChange), and keeps
// both up to date until Stop.
func (m *Members) Start(ctx context.Context) error {
	return m.life.Start(ctx, m.setup, m.run)
}

// setup joins: the first heartbeat, and a first read of the live members.
func (m *Members) setup(ctx context.Context) error {
	m.mu.Lock()
	m.live = nil
	m.instance, m.seq = nuid.Next(), 0
	m.mu.Unlock()
	s, err := m.js.Stream(ctx, m.cfg.Stream)
	if err != nil {
		return fmt.Errorf("members: stream %s: %w", m.cfg.Stream, err)
	}
	if err := m.join(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	m.stream = s
	m.mu.Unlock()
	if err := m.refresh(ctx); err != nil {
		m.log.Warn("read members", "err", err)
	}
	return nil
}

func (m *Members) run(runCtx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(runCtx, m.cfg.Every)
		if err := m.heartbeat(ctx); errors.Is(err, ErrIDInUse) {
			m.log.Error("another live process has this process id: both share its work unnoticed by the others; stop one, and give each its own id", "err", err)
		} else if err != nil {
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
	return m.life.Stop(ctx, m.leave)
}

// leave removes the heartbeat, so that the others take this process's share at once.
func (m *Members) leave(ctx context.Context) error {
	m.mu.Lock()
	s := m.stream
	m.mu.Unlock()
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

// join writes the first heartbeat, refusing an ID that another live process has. A heartbeat
// of another instance still stored is either a live process's or the last one of a process
// that died (a crash leaves it until its TTL): join watches it for two renewal periods, in
// which a live process renews it at least once. It refuses then; otherwise it takes the ID
// over, so that a process restarted after a crash rejoins within 2*Every rather than TTL.
func (m *Members) join(ctx context.Context) error {
	last, other, err := m.last(ctx)
	if err != nil {
		return err
	}
	if other != nil {
		m.log.Info("a heartbeat of this process id is stored; waiting to see whether it is renewed", "instance", other.Instance)
		t := time.NewTimer(2*m.cfg.Every + m.cfg.Every/2)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("members: join as %s: %w", m.cfg.ID, ctx.Err())
		case <-t.C:
		}
		again, _, err := m.last(ctx)
		if err != nil {
			return err
		}
		// A heartbeat that expired meanwhile (again is 0) was not renewed: its process is gone.
		if again != 0 && again != last {
			return fmt.Errorf("members: join as %q: %w (its heartbeat on %s is being renewed); give each process its own id", m.cfg.ID, ErrIDInUse, m.subject)
		}
		last = again
	}
	m.mu.Lock()
	m.seq = last
	m.mu.Unlock()
	if err := m.heartbeat(ctx); errors.Is(err, ErrIDInUse) {
		return fmt.Errorf("members: join as %q: %w (it wrote a heartbeat on %s meanwhile); give each process its own id", m.cfg.ID, ErrIDInUse, m.subject)
	} else if err != nil {
		return err
	}
	return nil
}

// last reads the last heartbeat on this process's subject: its sequence (0 for none), and
// its body when it is another instance's.
func (m *Members) last(ctx context.Context) (uint64, *heartbeat, error) {
	msg, err := stream.LastBySubject(ctx, m.js, m.cfg.Stream, m.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("members: read %s: %w", m.subject, err)
	}
	var hb heartbeat
	_ = json.Unmarshal(msg.Data, &hb) // one from before instances is another's
	m.mu.Lock()
	mine := hb.Instance == m.instance
	m.mu.Unlock()
	if mine {
		return msg.Sequence, nil, nil
	}
	return msg.Sequence, &hb, nil
}

// heartbeat renews this process's heartbeat, expecting its last one to be the subject's last
// message: another instance's heartbeat in between means a second live process with this ID
// (ErrIDInUse).
func (m *Members) heartbeat(ctx context.Context) error {
	m.mu.Lock()
	instance, expect := m.instance, m.seq
	m.mu.Unlock()
	data, err := json.Marshal(heartbeat{Instance: instance, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	send := func(expect uint64) (uint64, error) {
		ack, err := stream.Append(ctx, m.js, m.cfg.Stream, []stream.Msg{{
			Subject: m.subject,
			Data:    data,
			ID:      instance + "-" + nuid.Next(),
			Header:  nats.Header{HeaderTTL: []string{ttlHeader(m.cfg.TTL)}},
		}}, stream.Expect{FilterSubject: m.subject, LastSubjectSeq: expect})
		return ack.LastSeq, err
	}
	seq, err := send(expect)
	if errors.Is(err, stream.ErrConflict) {
		// Our last heartbeat expired (renewals failed for a TTL), or another instance wrote.
		last, other, rerr := m.last(ctx)
		switch {
		case rerr != nil:
			return fmt.Errorf("members: heartbeat %s: %w", m.subject, rerr)
		case other != nil:
			return fmt.Errorf("members: heartbeat %s: %w (instance %s)", m.subject, ErrIDInUse, other.Instance)
		}
		seq, err = send(last)
	}
	if err != nil {
		return fmt.Errorf("members: heartbeat %s: %w", m.subject, err)
	}
	m.mu.Lock()
	m.seq = seq
	m.mu.Unlock()
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
