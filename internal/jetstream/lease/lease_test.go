package lease_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/lease"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

const ttl = 2 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// server starts a server with the leases stream.
func server(t *testing.T) *natsserver.Server {
	srv, _, js := natstest.Run(t)
	_, err := js.CreateOrUpdateStream(testContext(t), streams.LeasesConfig(streams.Options{}))
	require.NoError(t, err)
	return srv
}

// connect opens a connection of its own, as a process would.
func connect(t *testing.T, srv *natsserver.Server) (*nats.Conn, jetstream.JetStream) {
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func TestAssign(t *testing.T) {
	const n = 16
	members := []string{"a", "b", "c"}
	owners := map[int]string{}
	for _, m := range members {
		mine := lease.Assign(n, members, m)
		assert.NotEmpty(t, mine, "%s gets a share", m)
		for _, p := range mine {
			require.Empty(t, owners[p], "partition %d has one owner", p)
			owners[p] = m
		}
	}
	assert.Len(t, owners, n, "every partition has an owner")
	assert.Equal(t, lease.Assign(n, members, "a"), lease.Assign(n, []string{"a", "b", "c"}, "a"), "deterministic")
	assert.Empty(t, lease.Assign(n, members, "z"), "a process that is not a member owns nothing")
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, lease.Assign(n, []string{"a"}, "a"))

	// A member joining takes partitions only from the others, and only for itself.
	joined := append(slices.Clone(members), "d")
	for p := range n {
		var after string
		for _, m := range joined {
			if slices.Contains(lease.Assign(n, joined, m), p) {
				after = m
			}
		}
		if after != owners[p] {
			assert.Equal(t, "d", after, "partition %d moved from %s to %s", p, owners[p], after)
		}
	}

	// Shares are balanced enough: over many process names, no member of two gets fewer than
	// a quarter of 64 partitions on average.
	total := 0
	for i := range 50 {
		pair := []string{fmt.Sprintf("host-%d", i), fmt.Sprintf("host-%d", i+1000)}
		total += len(lease.Assign(64, pair, pair[0]))
	}
	assert.InDelta(t, 32, float64(total)/50, 4)
}

func TestMembers(t *testing.T) {
	srv := server(t)
	type view struct {
		mu   sync.Mutex
		live []string
	}
	start := func(id string) (*lease.Members, *view, *nats.Conn) {
		nc, js := connect(t, srv)
		v := &view{}
		m, err := lease.NewMembers(js, lease.MembersConfig{ID: id, TTL: ttl, Logger: logger(t), OnChange: func(live []string) {
			v.mu.Lock()
			v.live = live
			v.mu.Unlock()
		}})
		require.NoError(t, err)
		require.NoError(t, m.Start(testContext(t)))
		t.Cleanup(func() { _ = m.Stop(context.Background()) })
		return m, v, nc
	}
	sees := func(v *view, want ...string) func() bool {
		return func() bool {
			v.mu.Lock()
			defer v.mu.Unlock()
			return slices.Equal(v.live, want)
		}
	}

	a, av, _ := start("a")
	assert.Equal(t, []string{"a"}, a.Live(), "Start reads the members")
	assert.True(t, sees(av, "a")(), "and tells OnChange")
	_, bv, _ := start("b")
	c, cv, cnc := start("c")
	require.Eventually(t, sees(av, "a", "b", "c"), 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, sees(bv, "a", "b", "c"), 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, sees(cv, "a", "b", "c"), 5*time.Second, 20*time.Millisecond)

	// A member that leaves is gone at once (within one period of the others).
	left := time.Now()
	require.NoError(t, a.Stop(testContext(t)))
	require.Eventually(t, sees(bv, "b", "c"), 5*time.Second, 20*time.Millisecond)
	assert.Less(t, time.Since(left), ttl, "a clean leave does not wait for the TTL")

	// A member whose process dies is gone once its last heartbeat expires.
	cnc.Close()
	crashed := time.Now()
	require.Eventually(t, sees(bv, "b"), 10*time.Second, 20*time.Millisecond)
	gone := time.Since(crashed)
	t.Logf("a crashed member was gone after %s (TTL %s)", gone, ttl)
	assert.GreaterOrEqual(t, gone, ttl-2*ttl/5, "it was alive until its TTL")
	assert.Error(t, c.Stop(testContext(t)), "a dead process cannot leave")
}

func TestMembersConfig(t *testing.T) {
	_, _, js := natstest.Run(t)
	for _, cfg := range []lease.MembersConfig{
		{},
		{ID: "a.b"},
		{ID: "a", TTL: time.Second},
		{ID: "a", TTL: 4 * time.Second, Every: 3 * time.Second},
	} {
		_, err := lease.NewMembers(js, cfg)
		assert.Error(t, err, "%+v", cfg)
	}
	for _, cfg := range []lease.Config{
		{Holder: "a"},
		{Role: "r"},
		{Role: "r", Holder: "a", TTL: time.Second},
	} {
		_, err := lease.New(js, cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}

// holders counts the leases held now.
func holders(ls ...*lease.Lease) (n int, who int) {
	for i, l := range ls {
		if l.Held() {
			n++
			who = i
		}
	}
	return n, who
}

func TestLease(t *testing.T) {
	srv := server(t)
	var leases []*lease.Lease
	var conns []*nats.Conn
	for _, id := range []string{"a", "b", "c"} {
		nc, js := connect(t, srv)
		l, err := lease.New(js, lease.Config{Role: "dispatcher", Holder: id, TTL: ttl, Logger: logger(t)})
		require.NoError(t, err)
		require.NoError(t, l.Start(testContext(t)))
		t.Cleanup(func() { _ = l.Stop(context.Background()) })
		leases = append(leases, l)
		conns = append(conns, nc)
	}
	// Watch the whole test: never two holders at once.
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	var twice int
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n, _ := holders(leases...); n > 1 {
				twice++
			}
		}
	}()
	defer func() {
		close(stop)
		watch.Wait()
		assert.Zero(t, twice, "two processes held the lease at once")
	}()

	require.Eventually(t, func() bool { n, _ := holders(leases...); return n == 1 }, 5*time.Second, 10*time.Millisecond)
	_, first := holders(leases...)
	assert.Equal(t, 0, first, "the first to start takes it")

	// A clean stop releases it: another takes it within a period or two.
	released := time.Now()
	require.NoError(t, leases[0].Stop(testContext(t)))
	select {
	case <-leases[0].Changes():
	default:
		t.Error("Changes tells the holder it lost the lease")
	}
	require.Eventually(t, func() bool { n, _ := holders(leases...); return n == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Less(t, time.Since(released), ttl, "a released lease is taken before its TTL")
	_, second := holders(leases...)

	// A holder whose process dies loses it once its TTL has passed.
	conns[second].Close()
	crashed := time.Now()
	require.Eventually(t, func() bool {
		n, who := holders(leases...)
		return n == 1 && who != second
	}, 10*time.Second, 10*time.Millisecond)
	took := time.Since(crashed)
	t.Logf("the lease was taken over %s after its holder died (TTL %s)", took, ttl)
	assert.GreaterOrEqual(t, took, ttl-2*ttl/5, "nobody took it while it could still be valid")
}

// A lease whose message stays unchanged for a whole TTL is taken over even when the server
// has not dropped it (here it has no TTL at all).
func TestLeaseTakenOverWhenNotRenewed(t *testing.T) {
	srv := server(t)
	_, js := connect(t, srv)
	subject, err := streams.LeaderSubject("dispatcher")
	require.NoError(t, err)
	_, err = js.Publish(testContext(t), subject, []byte(`{"holder":"ghost"}`))
	require.NoError(t, err)

	l, err := lease.New(js, lease.Config{Role: "dispatcher", Holder: "a", TTL: ttl, Logger: logger(t)})
	require.NoError(t, err)
	started := time.Now()
	require.NoError(t, l.Start(testContext(t)))
	assert.False(t, l.Held(), "the ghost's lease counts until it was seen unchanged for a TTL")
	require.Eventually(t, l.Held, 10*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(started), ttl)
	require.NoError(t, l.Stop(testContext(t)))

	// A lease taken by someone else behind the holder's back is lost at the next renewal.
	l2, err := lease.New(js, lease.Config{Role: "dispatcher", Holder: "b", TTL: ttl, Logger: logger(t)})
	require.NoError(t, err)
	require.NoError(t, l2.Start(testContext(t)))
	require.True(t, l2.Held(), "a released lease is free")
	_, err = js.Publish(testContext(t), subject, []byte(`{"holder":"usurper"}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !l2.Held() }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, l2.Stop(testContext(t)))
}

// TestMembersRefuseADuplicateID: a second process with the ID of a live one refuses to start,
// with an error naming the ID; a process started again with the ID of one that crashed (its
// last heartbeat still stored) joins before that heartbeat expires.
func TestMembersRefuseADuplicateID(t *testing.T) {
	srv := server(t)
	start := func(id string) (*lease.Members, *nats.Conn, error) {
		nc, js := connect(t, srv)
		m, err := lease.NewMembers(js, lease.MembersConfig{ID: id, TTL: ttl, Logger: logger(t)})
		require.NoError(t, err)
		err = m.Start(testContext(t))
		if err == nil {
			t.Cleanup(func() { _ = m.Stop(context.Background()) })
		}
		return m, nc, err
	}
	first, firstConn, err := start("p1")
	require.NoError(t, err)

	_, _, err = start("p1")
	require.ErrorIs(t, err, lease.ErrIDInUse, "a second live p1 is refused")
	assert.ErrorContains(t, err, `"p1"`)
	assert.Equal(t, []string{"p1"}, first.Live())

	// p1 crashes: its heartbeat stays until its TTL. Started again, p1 joins.
	firstConn.Close()
	crashed := time.Now()
	again, _, err := start("p1")
	require.NoError(t, err, "p1 restarted after a crash joins")
	t.Logf("p1 rejoined %s after its crash (TTL %s)", time.Since(crashed).Round(time.Millisecond), ttl)
	assert.Equal(t, []string{"p1"}, again.Live())
}
