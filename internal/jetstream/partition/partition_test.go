package partition_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/partition"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

const (
	waitFor    = 20 * time.Second
	partitions = 4
	// Far beyond the test's deadlines: a partition that reaches another client in time was
	// unpinned, not left to expire.
	pinnedTTL = time.Hour
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a server with the stream PARTS, whose partition p is parts.<p>.>.
func setup(t *testing.T) (*natsserver.Server, jetstream.JetStream) {
	srv, _, js := natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(testContext(t), js, []jetstream.StreamConfig{{
		Name: "PARTS", Subjects: []string{"parts.>"}, Storage: jetstream.MemoryStorage,
	}}))
	return srv, js
}

// member is one process's set of partitions, recording what its loop handles.
type member struct {
	*partition.Set
	loop    *consume.Loop
	hold    chan struct{} // closed to let a message on parts.<p>.held finish
	holding atomic.Bool   // a message on parts.<p>.held is in the handler
	mu      sync.Mutex
	got     []string // subjects handled
	removed []int    // partitions given to OnRemoved
	stopped bool
}

// consumer is the partition's consumer, or a broken one when broken reports so.
func consumer(broken func(p int) bool) func(p int) jetstream.ConsumerConfig {
	return func(p int) jetstream.ConsumerConfig {
		cc := jetstream.ConsumerConfig{FilterSubject: "parts." + strconv.Itoa(p) + ".>", AckWait: 5 * time.Second, MaxDeliver: -1}
		if broken != nil && broken(p) {
			cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy // without a start sequence: refused
		}
		return cc
	}
}

func newMember(t *testing.T, js jetstream.JetStream, broken func(p int) bool) *member {
	m := &member{hold: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	loop, err := consume.New(js, consume.Config{
		Name:       "tester",
		Stream:     "PARTS",
		Workers:    2,
		DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
		Logger:     log,
	}, func(ctx context.Context, d consume.Delivery) consume.Outcome {
		if strings.HasSuffix(d.Msg.Subject(), ".held") {
			m.holding.Store(true)
			select {
			case <-m.hold:
			case <-ctx.Done(): // a stop that ran out of time
				return consume.Abandon()
			}
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.got = append(m.got, d.Msg.Subject())
		return consume.Ack()
	})
	require.NoError(t, err)
	require.NoError(t, loop.Start(testContext(t)))
	m.loop = loop
	m.Set, err = partition.New(js, partition.Config{
		Name:       "tester",
		Stream:     "PARTS",
		Loop:       loop,
		Durable:    "tester",
		Consumer:   consumer(broken),
		Group:      "tester",
		PinnedTTL:  pinnedTTL,
		Partitions: partitions,
		OnRemoved: func(p int) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.removed = append(m.removed, p)
		},
		Logger: log,
	})
	require.NoError(t, err)
	t.Cleanup(func() { m.stop(t) })
	return m
}

func (m *member) stop(t *testing.T) {
	m.mu.Lock()
	stopped := m.stopped
	m.stopped = true
	m.mu.Unlock()
	if !stopped {
		require.NoError(t, m.Stop(context.Background()))
	}
}

func (m *member) handled(subject string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.got, subject)
}

func (m *member) removals() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.removed)
}

func publish(t *testing.T, js jetstream.JetStream, subject string) {
	_, err := js.Publish(testContext(t), subject, nil, jetstream.WithMsgID(subject))
	require.NoError(t, err)
}

func waitHandled(t *testing.T, m *member, subject string) {
	require.Eventually(t, func() bool { return m.handled(subject) }, waitFor, 10*time.Millisecond,
		"%s not handled", subject)
}

// TestAssignMovesPartitionsAndUnpinsThem: a partition given up is drained and unpinned, so
// that the client that takes it over gets its messages at once, not after PinnedTTL (an hour
// here); Stop unpins every partition the same way.
func TestAssignMovesPartitionsAndUnpinsThem(t *testing.T) {
	srv, js := setup(t)
	ctx := testContext(t)
	_, second := natstest.Connect(t, srv) // pins are per client
	a, b := newMember(t, js, nil), newMember(t, second, nil)

	require.NoError(t, a.Assign(ctx, []int{1, 0}))
	assert.Equal(t, []int{0, 1}, a.Partitions())
	publish(t, js, "parts.0.a")
	publish(t, js, "parts.1.a")
	waitHandled(t, a, "parts.0.a")
	waitHandled(t, a, "parts.1.a")

	// b consumes partition 0 too, but a holds its pin.
	require.NoError(t, b.Assign(ctx, []int{0}))
	publish(t, js, "parts.0.b")
	waitHandled(t, a, "parts.0.b")
	assert.False(t, b.handled("parts.0.b"))

	require.NoError(t, a.Assign(ctx, []int{1}))
	assert.Equal(t, []int{1}, a.Partitions())
	assert.Equal(t, []int{0}, a.removals(), "OnRemoved is told of the partition given up")
	publish(t, js, "parts.0.c")
	waitHandled(t, b, "parts.0.c")
	assert.False(t, a.handled("parts.0.c"))

	// Stop unpins what a still holds.
	require.NoError(t, b.Assign(ctx, []int{0, 1}))
	a.stop(t)
	assert.Empty(t, a.Partitions())
	assert.Equal(t, []int{0}, a.removals(), "Stop does not call OnRemoved")
	publish(t, js, "parts.1.b")
	waitHandled(t, b, "parts.1.b")
	assert.False(t, a.handled("parts.1.b"))
}

// TestOnRemovedFollowsTheDrain: a partition given up is forgotten (OnRemoved) only once the
// message in progress on it has settled, so that the owner does not forget it while a worker
// still writes to it.
func TestOnRemovedFollowsTheDrain(t *testing.T) {
	_, js := setup(t)
	ctx := testContext(t)
	m := newMember(t, js, nil)
	require.NoError(t, m.Assign(ctx, []int{0}))
	publish(t, js, "parts.0.held")
	require.Eventually(t, m.holding.Load, waitFor, 10*time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- m.Assign(ctx, nil) }()
	// The loop lets the consumer go at the start of its removal, which then waits for the
	// held message.
	require.Eventually(t, func() bool { return len(m.loop.Consumers()) == 0 }, waitFor, 10*time.Millisecond)
	assert.Empty(t, m.removals(), "OnRemoved before the drain")
	select {
	case err := <-done:
		t.Fatalf("Assign returned before the held message settled: %v", err)
	default:
	}
	close(m.hold)
	require.NoError(t, <-done)
	assert.True(t, m.handled("parts.0.held"))
	assert.Equal(t, []int{0}, m.removals())
	assert.Empty(t, m.Partitions())
}

// TestStopCutsShortAnAssignInProgress: Stop does not wait for an Assign that is stuck (here a
// removal waiting for a held message, with an hour left on its context; in production the
// requests of an Assign made while NATS reconnects): the Assign is cancelled and Stop goes on.
func TestStopCutsShortAnAssignInProgress(t *testing.T) {
	_, js := setup(t)
	m := newMember(t, js, nil)
	require.NoError(t, m.Assign(testContext(t), []int{0}))
	publish(t, js, "parts.0.held")
	require.Eventually(t, m.holding.Load, waitFor, 10*time.Millisecond)

	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	assigned := make(chan error, 1)
	go func() { assigned <- m.Assign(long, nil) }()
	require.Eventually(t, func() bool { return len(m.loop.Consumers()) == 0 }, waitFor, 10*time.Millisecond,
		"the removal started")

	m.mu.Lock()
	m.stopped = true // stopped here, not again by the cleanup
	m.mu.Unlock()
	stopped := make(chan error, 1)
	go func() {
		// The held message keeps the loop's own stop waiting until this context ends.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		stopped <- m.Stop(ctx)
	}()
	select {
	case err := <-assigned:
		require.ErrorIs(t, err, context.Canceled, "the Assign was cut short")
	case <-time.After(waitFor):
		t.Fatal("Stop did not cut the Assign in progress short")
	}
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("Stop did not return")
	}
	close(m.hold)
}

// TestFailedAddIsRetriedByTheNextAssign: a partition whose consumer cannot be added is left
// out, and the next Assign with it tries again.
func TestFailedAddIsRetriedByTheNextAssign(t *testing.T) {
	_, js := setup(t)
	ctx := testContext(t)
	var broken atomic.Bool
	broken.Store(true)
	m := newMember(t, js, func(p int) bool { return p == 1 && broken.Load() })

	err := m.Assign(ctx, []int{0, 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tester-1")
	assert.Equal(t, []int{0}, m.Partitions(), "the partition that failed is not assigned")

	broken.Store(false)
	require.NoError(t, m.Assign(ctx, []int{0, 1}))
	assert.Equal(t, []int{0, 1}, m.Partitions())
	publish(t, js, "parts.1.a")
	waitHandled(t, m, "parts.1.a")
}

// TestAssignTakesPartitionsInRangeOnly: a partition out of range fails the call before anything
// moves; the partitions given are sorted and compacted.
func TestAssignTakesPartitionsInRangeOnly(t *testing.T) {
	_, js := setup(t)
	ctx := testContext(t)
	m := newMember(t, js, nil)
	require.NoError(t, m.Assign(ctx, []int{2, 0, 2}))
	assert.Equal(t, []int{0, 2}, m.Partitions())

	for _, ps := range [][]int{{partitions}, {-1}, {1, partitions + 3}} {
		err := m.Assign(ctx, ps)
		require.Error(t, err, "%v", ps)
		assert.Contains(t, err.Error(), fmt.Sprintf("not within 0 to %d", partitions-1))
		assert.True(t, strings.HasPrefix(err.Error(), "tester: assign partition "), err.Error())
		assert.Equal(t, []int{0, 2}, m.Partitions(), "nothing moved on %v", ps)
	}
	assert.Empty(t, m.removals())
}

func TestNewChecksConfig(t *testing.T) {
	_, js := setup(t)
	loop, err := consume.New(js, consume.Config{Name: "tester", Stream: "PARTS",
		DeadLetter: deadletter.NewWriter(js, deadletter.Config{})},
		func(context.Context, consume.Delivery) consume.Outcome { return consume.Ack() })
	require.NoError(t, err)
	valid := func() partition.Config {
		return partition.Config{Name: "tester", Stream: "PARTS", Loop: loop, Durable: "tester",
			Consumer: consumer(nil), Group: "tester", PinnedTTL: 2 * time.Second, Partitions: 1}
	}
	_, err = partition.New(js, valid())
	require.NoError(t, err)
	for _, tc := range []struct {
		want   string
		change func(c *partition.Config)
	}{
		{"Name is required", func(c *partition.Config) { c.Name = "" }},
		{"Stream is required", func(c *partition.Config) { c.Stream = "" }},
		{"Loop is required", func(c *partition.Config) { c.Loop = nil }},
		{"Durable is required", func(c *partition.Config) { c.Durable = "" }},
		{"Consumer is required", func(c *partition.Config) { c.Consumer = nil }},
		{"Group is required", func(c *partition.Config) { c.Group = "" }},
		{"PinnedTTL 1s is under 2 seconds", func(c *partition.Config) { c.PinnedTTL = time.Second }},
		{"Partitions 0 is under 1", func(c *partition.Config) { c.Partitions = 0 }},
	} {
		cfg := valid()
		tc.change(&cfg)
		_, err := partition.New(js, cfg)
		assert.ErrorContains(t, err, tc.want)
	}
}
