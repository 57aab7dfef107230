package engine_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/natsserver"
)

// TestQueuedStartsSoonAfterAnotherProcessRestarts: a `serve` is attached to the NATS of a
// `dev`, and dev restarts: it stops (its lease goes to serve), its embedded server stops, and
// both come back a while later, dev under a new id as it does by default. An execution queued
// afterwards starts within a bound that follows from the TTL.
func TestQueuedStartsSoonAfterAnotherProcessRestarts(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	c := newCluster(t, map[string]string{"svc": svc.URL})
	const workflow = `
id: one_call
steps:
  - {id: call, type: api_call, service: svc, endpoint: /call}
`
	dev := c.start("dev-1", nil)
	serve := c.start("serve", nil)
	c.register([]*proc{dev, serve}, workflow)
	ctx := testContext(t)
	ttl := 2 * time.Second // fastRecovery's Cluster.TTL
	_, _, err := serve.eng.Start(ctx, engine.StartRequest{WorkflowID: "one_call"})
	require.NoError(t, err)
	c.waitEnded(1, waitFor)

	dev.stop()
	require.Eventually(t, func() bool { return serve.eng.Stats().Leader }, waitFor, 10*time.Millisecond)
	cfg := c.srv.Config()
	cfg.Port = c.srv.Port()
	c.srv.Shutdown()
	time.Sleep(2 * ttl) // the server is down for a while: not a wait for a result
	srv, err := natsserver.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	c.srv = srv
	t.Cleanup(func() { // before the server stops
		for _, p := range c.procs {
			p.stop()
		}
	})
	dev = c.start("dev-2", nil)
	c.register([]*proc{dev, serve}, workflow)

	queued := time.Now()
	_, _, err = serve.eng.Start(ctx, engine.StartRequest{WorkflowID: "one_call"})
	require.NoError(t, err)
	started := func() bool {
		s, err := c.admin.Stream(ctx, streams.Executions)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter("memmie.executions.*.started"))
		return err == nil && len(info.State.Subjects) == 2
	}
	require.Eventually(t, started, 3*ttl, 20*time.Millisecond, "the new execution starts within 3 TTLs")
	t.Logf("started %s after it was queued", time.Since(queued).Round(time.Millisecond))
}
