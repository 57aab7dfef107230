package natsserver_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
)

// permissionErrors collects the asynchronous permission violations the server reports to a
// connection.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
		p.mu.Lock()
		p.errs = append(p.errs, err.Error())
		p.mu.Unlock()
	}
}

func (p *permissionErrors) waitFor(t *testing.T, subject string) {
	t.Helper()
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.errs {
			if strings.Contains(e, subject) {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "no permission violation for %s", subject)
}

// TestNATSConfPermissions loads the top-level nats.conf with the server's own config parser and
// proves the client user's rights: publish blob events, read deltas and executions through
// JetStream, and write neither deltas nor executions.
func TestNATSConfPermissions(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{ConfigFile: "../../nats.conf", Port: -1, StoreDir: t.TempDir()})
	require.NoError(t, err, "start a server from nats.conf")
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	engine, err := nats.Connect(srv.ClientURL(), nats.UserInfo("engine", "engine-dev-password"))
	require.NoError(t, err)
	defer engine.Close()
	ejs, err := jetstream.New(engine)
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, ejs, streams.Configs(streams.Options{})), "the engine user manages the streams")
	_, err = ejs.Publish(ctx, "memmie.deltas.b1", []byte(`{"version":1}`))
	require.NoError(t, err, "the engine user writes deltas")
	_, err = ejs.Publish(ctx, "memmie.executions.e1.queued", []byte(`{}`))
	require.NoError(t, err, "the engine user writes executions")

	var perms permissionErrors
	client, err := nats.Connect(srv.ClientURL(), nats.UserInfo("client", "client-dev-password"), nats.ErrorHandler(perms.handler))
	require.NoError(t, err)
	defer client.Close()
	cjs, err := jetstream.New(client)
	require.NoError(t, err)

	// Allowed: publishing a blob event, with its JetStream acknowledgement.
	ack, err := cjs.Publish(ctx, "memmie.blobs.b1.created", []byte(`{"blob_id":"b1"}`), jetstream.WithMsgID("b1-created"))
	require.NoError(t, err, "the client publishes blob events")
	require.Equal(t, streams.Blobs, ack.Stream)

	// Allowed: replaying deltas and executions with ordered consumers.
	for _, tc := range []struct{ stream, subject string }{
		{streams.Deltas, "memmie.deltas.b1"},
		{streams.Executions, "memmie.executions.e1.queued"},
	} {
		cons, err := cjs.OrderedConsumer(ctx, tc.stream, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err, "the client reads %s", tc.stream)
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err, "the client replays %s", tc.stream)
		require.Equal(t, tc.subject, msg.Subject())
	}

	// Denied: writing deltas or executions, by JetStream or by plain publish.
	for _, subject := range []string{"memmie.deltas.b1", "memmie.executions.e1.completed", "memmie.executions.e2.queued"} {
		require.NoError(t, client.Publish(subject, []byte(`{}`)))
		require.NoError(t, client.Flush())
		perms.waitFor(t, subject)
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := cjs.Publish(short, subject, []byte(`{}`), jetstream.WithRetryAttempts(0))
		cancelShort()
		require.Error(t, err, "a JetStream publish to %s must fail", subject)
	}
	// Denied: managing streams.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	err = cjs.DeleteStream(short, streams.Deltas)
	require.Error(t, err, "the client must not delete streams")

	// Nothing the client tried to write landed.
	for name, want := range map[string]uint64{streams.Deltas: 1, streams.Executions: 1, streams.Blobs: 1} {
		s, err := ejs.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, want, info.State.Msgs, "messages in %s", name)
	}
}
