package lease_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/lease"
)

// A crashed instance's heartbeat that expires while a restarted process waits to see whether
// it is renewed was not renewed: the process joins. (Once, the expiry itself counted as a
// renewal, and a process restarted about a TTL after its crash was refused.)
func TestMembersJoinWhenTheOldHeartbeatExpiresMeanwhile(t *testing.T) {
	srv := server(t)
	_, js := connect(t, srv)
	subject, err := streams.MemberSubject("p1")
	require.NoError(t, err)
	// Another instance's last heartbeat, about to expire: it lives 1 s, and the join waits
	// 2.5 renewal periods (TTL/5 each: 1 s).
	msg := nats.NewMsg(subject)
	msg.Data = []byte(`{"instance":"crashed","at":"2026-01-01T00:00:00Z"}`)
	msg.Header.Set(lease.HeaderTTL, "1s")
	_, err = js.PublishMsg(testContext(t), msg)
	require.NoError(t, err)

	m, err := lease.NewMembers(js, lease.MembersConfig{ID: "p1", TTL: ttl, Logger: logger(t)})
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, m.Start(testContext(t)), "the crashed instance's heartbeat expired: it was not renewed")
	t.Cleanup(func() { _ = m.Stop(testContext(t)) })
	t.Logf("joined after %s", time.Since(began).Round(time.Millisecond))
	require.Equal(t, []string{"p1"}, m.Live())
}
