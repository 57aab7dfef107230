package partition

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/jetstream/consume"
)

// Moving a partition is a few requests to the server, or a drain: this many move at once.
const moves = 8

// unpinTimeout bounds Stop's unpinning, which gets its own time even when Stop's context ran
// out on slow messages.
const unpinTimeout = 5 * time.Second

// Config configures a Set.
type Config struct {
	// Name names the set's owner at the start of the errors it makes (its handler's name,
	// "orchestrator"). Required.
	Name string
	// Stream is the stream the partition consumers read, on which they are unpinned. Required.
	Stream string
	// Loop consumes the partitions: Assign adds and removes their consumers on it, and Stop
	// stops it. Its owner starts it before the first Assign. Required.
	Loop *consume.Loop
	// Durable prefixes the consumers' durable names: <Durable>-<partition>. Required.
	Durable string
	// Consumer returns the configuration of a partition's consumer. The set names it and
	// pins it: it overrides Durable, PriorityPolicy, PriorityGroups and PinnedTTL. Required.
	Consumer func(partition int) jetstream.ConsumerConfig
	// Group is the consumers' priority group, in which each is pinned to one client at a
	// time. Required.
	Group string
	// PinnedTTL is how long a consumer stays pinned to a client that stopped pulling (a
	// crashed process) before another client gets its messages. At least 2 seconds: pulls
	// renew the pin, and expire after at least a second. Required.
	PinnedTTL time.Duration
	// Partitions is the number of the stream's partitions; Assign takes those below it.
	// Required.
	Partitions int
	// OnRemoved, when set, is called with each partition Assign gives up, once its consumer
	// is removed from the loop (drained, or not when the removal failed), before it is
	// unpinned: the owner forgets what it cached of the partition. Stop does not call it.
	// Defaults to none.
	OnRemoved func(partition int)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) check() error {
	c.Logger = cmp.Or(c.Logger, slog.Default())
	switch {
	case c.Name == "":
		return errors.New("partition: Name is required")
	case c.Stream == "":
		return fmt.Errorf("partition %s: Stream is required", c.Name)
	case c.Loop == nil:
		return fmt.Errorf("partition %s: Loop is required", c.Name)
	case c.Durable == "":
		return fmt.Errorf("partition %s: Durable is required", c.Name)
	case c.Consumer == nil:
		return fmt.Errorf("partition %s: Consumer is required", c.Name)
	case c.Group == "":
		return fmt.Errorf("partition %s: Group is required", c.Name)
	case c.PinnedTTL < 2*time.Second:
		return fmt.Errorf("partition %s: PinnedTTL %s is under 2 seconds", c.Name, c.PinnedTTL)
	case c.Partitions < 1:
		return fmt.Errorf("partition %s: Partitions %d is under 1", c.Name, c.Partitions)
	}
	return nil
}

// Set consumes the partitions it is assigned, each through a pinned durable consumer.
type Set struct {
	js  jetstream.JetStream
	cfg Config

	assignMu sync.Mutex // one Assign at a time; Stop waits for it
	mu       sync.Mutex
	assigned []int // the partitions consumed, sorted
	// cancel cuts short the Assign in progress, if any (nil otherwise); under mu.
	cancel context.CancelFunc
}

// New checks cfg and returns a set that consumes no partition yet.
func New(js jetstream.JetStream, cfg Config) (*Set, error) {
	if js == nil {
		return nil, errors.New("partition: no JetStream context")
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Set{js: js, cfg: cfg}, nil
}

// ConsumerName returns the durable name of a partition's consumer.
func (s *Set) ConsumerName(partition int) string {
	return s.cfg.Durable + "-" + strconv.Itoa(partition)
}

// consumerConfig is the pinned durable consumer of one partition.
func (s *Set) consumerConfig(partition int) jetstream.ConsumerConfig {
	cc := s.cfg.Consumer(partition)
	cc.Durable = s.ConsumerName(partition)
	cc.PriorityPolicy = jetstream.PriorityPolicyPinned
	cc.PriorityGroups = []string{s.cfg.Group}
	cc.PinnedTTL = s.cfg.PinnedTTL
	return cc
}

// Assign makes the set consume exactly the given partitions: it stops consuming (drains, then
// unpins) those it no longer has, then starts on the new ones, several at a time. Calls are
// serialized. A partition out of range fails the call before anything moves; any other error
// leaves its partition unassigned (a partition that failed to leave is not consumed any more
// either, but stays pinned until PinnedTTL), and the next call tries again.
func (s *Set) Assign(ctx context.Context, partitions []int) error {
	s.assignMu.Lock()
	defer s.assignMu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancel = nil
		s.mu.Unlock()
		cancel()
	}()
	want := slices.Clone(partitions)
	slices.Sort(want)
	want = slices.Compact(want)
	for _, p := range want {
		if p < 0 || p >= s.cfg.Partitions {
			return fmt.Errorf("%s: assign partition %d: not within 0 to %d", s.cfg.Name, p, s.cfg.Partitions-1)
		}
	}
	have := s.Partitions()
	var gone, added []int
	for _, p := range have {
		if !slices.Contains(want, p) {
			gone = append(gone, p)
		}
	}
	for _, p := range want {
		if !slices.Contains(have, p) {
			added = append(added, p)
		}
	}

	errs := each(gone, func(p int) error {
		// Remove stops the pulls at once, even when it returns before the messages in
		// progress are settled (ctx ended): the partition is no longer consumed here.
		err := s.cfg.Loop.Remove(ctx, s.ConsumerName(p))
		s.setAssigned(p, false)
		if s.cfg.OnRemoved != nil {
			s.cfg.OnRemoved(p)
		}
		return err // on an error, still pinned here: the next process waits for PinnedTTL
	})
	var removed []int
	for i, p := range gone {
		if errs[i] == nil {
			removed = append(removed, p)
		}
	}
	s.unpin(ctx, removed...)
	errs = append(errs, each(added, func(p int) error {
		if err := s.cfg.Loop.Add(ctx, s.consumerConfig(p), jetstream.FetchPriorityGroup(s.cfg.Group)); err != nil {
			return err
		}
		s.setAssigned(p, true)
		return nil
	})...)

	if now := s.Partitions(); !slices.Equal(now, have) {
		s.cfg.Logger.Info("partitions assigned", "partitions", now)
	}
	return errors.Join(errs...)
}

// each calls f on every partition, several at a time, and returns its errors in the order of
// parts.
func each(parts []int, f func(p int) error) []error {
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, moves)
	for i, p := range parts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = f(p)
		}()
	}
	wg.Wait()
	return errs
}

// Partitions returns the partitions consumed now, sorted.
func (s *Set) Partitions() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.assigned)
}

func (s *Set) setAssigned(p int, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.assigned, p)
	switch {
	case on && !found:
		s.assigned = slices.Insert(s.assigned, i, p)
	case !on && found:
		s.assigned = slices.Delete(s.assigned, i, i+1)
	}
}

// Stop cuts short an Assign in progress (its requests may wait out a NATS reconnect) and waits
// for it to return, stops the loop (messages in progress finish, see
// consume.Loop.Stop), then unpins every partition, so that the processes that take them over
// get their messages at once. It returns the loop's error; unpinning is best effort, with its
// own few seconds even when ctx has run out.
func (s *Set) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.assignMu.Lock()
	defer s.assignMu.Unlock()
	err := s.cfg.Loop.Stop(ctx)
	s.mu.Lock()
	parts := s.assigned
	s.assigned = nil
	s.mu.Unlock()
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unpinTimeout)
	defer cancel()
	s.unpin(uctx, parts...)
	return err
}

// unpin lets the next client of the partitions have their messages without waiting for
// PinnedTTL. A failure is only logged: the pin then expires after PinnedTTL.
func (s *Set) unpin(ctx context.Context, partitions ...int) {
	if len(partitions) == 0 {
		return
	}
	st, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		s.cfg.Logger.Debug("unpin partitions", "partitions", partitions, "err", err)
		return
	}
	for _, p := range partitions {
		if err := st.UnpinConsumer(ctx, s.ConsumerName(p), s.cfg.Group); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.cfg.Logger.Debug("unpin partition", "partition", p, "err", err)
		}
	}
}
