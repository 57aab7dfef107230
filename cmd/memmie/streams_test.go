package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/devlock"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
)

func TestStreamsUpdate(t *testing.T) {
	srv, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := srv.ClientURL()
	inboxPartitions := func() int {
		s, err := js.Stream(ctx, streams.Inbox)
		require.NoError(t, err)
		n, ok := streams.PartitionsOf(s.CachedInfo().Config)
		require.True(t, ok)
		return n
	}

	code, out, errOut := executeSplit(t, "streams", "update", "--nats-url", url)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "MEMMIE_EXECUTIONS: missing\nMEMMIE_EXECUTIONS: created\n")
	assert.Contains(t, out, "MEMMIE_INBOX: created\n")
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{})), "update creates what a start wants")

	code, out, errOut = executeSplit(t, "streams", "show", "--nats-url", url)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "MEMMIE_INBOX: as wanted\n")

	t.Run("dry run changes nothing", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "streams", "update", "--nats-url", url, "--partitions", "4", "--dry-run")
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "MEMMIE_INBOX: partitions: 16 on the server, 4 wanted\n")
		assert.NotContains(t, out, "updated")
		assert.Equal(t, 16, inboxPartitions())
	})

	t.Run("partitions do not change while the inbox holds a command", func(t *testing.T) {
		_, err := js.Publish(ctx, "memmie.inbox.e1", []byte(`{}`), jetstream.WithMsgID("cmd-1"))
		require.NoError(t, err)
		code, out, _ := executeSplit(t, "streams", "update", "--nats-url", url, "--partitions", "4")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "MEMMIE_INBOX: not updated: the inbox holds commands (1): changing the partitions would orphan them")
		assert.Equal(t, 16, inboxPartitions())
		s, err := js.Stream(ctx, streams.Inbox)
		require.NoError(t, err)
		require.NoError(t, s.Purge(ctx, jetstream.WithPurgeSubject(streams.SubjectInboxPartitions)))
	})

	t.Run("partitions do not change while a process pulls from the inbox", func(t *testing.T) {
		cons, err := js.CreateConsumer(ctx, streams.Inbox, jetstream.ConsumerConfig{Durable: "orchestrator-0",
			FilterSubject: streams.InboxPartitionFilter(0), AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(t, err)
		it, err := cons.Messages()
		require.NoError(t, err)
		go func() { _, _ = it.Next() }()
		require.Eventually(t, func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.NumWaiting > 0
		}, 20*time.Second, 10*time.Millisecond)
		code, out, _ := executeSplit(t, "streams", "update", "--nats-url", url, "--partitions", "4")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "MEMMIE_INBOX: not updated: memmie processes are running: consumer orchestrator-0 still pulls from the inbox")
		assert.Equal(t, 16, inboxPartitions())
		it.Stop()
		require.NoError(t, js.DeleteConsumer(ctx, streams.Inbox, "orchestrator-0"))
	})

	t.Run("update applies a change on an empty inbox", func(t *testing.T) {
		code, out, errOut := executeSplit(t, "streams", "update", "--nats-url", url, "--partitions", "4")
		require.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "MEMMIE_INBOX: updated\n")
		assert.Equal(t, 4, inboxPartitions())
		require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{Partitions: 4})))
		// Without --partitions, the inbox keeps its 4.
		code, out, errOut = executeSplit(t, "streams", "show", "--nats-url", url)
		require.Equal(t, 0, code, errOut)
		assert.Contains(t, out, "MEMMIE_INBOX: as wanted\n")
	})

	t.Run("MEMMIE_BLOBS of an older memmie is partitioned once its events are processed", func(t *testing.T) {
		s, err := js.Stream(ctx, streams.Blobs)
		require.NoError(t, err)
		cfg := s.CachedInfo().Config
		cfg.SubjectTransform = nil // as an older memmie created it
		_, err = js.UpdateStream(ctx, cfg)
		require.NoError(t, err)
		_, err = js.Publish(ctx, "memmie.blobs.b1.created", []byte(`{"blob_id": "b1"}`), jetstream.WithMsgID("old-1"))
		require.NoError(t, err)
		cons, err := js.CreateConsumer(ctx, streams.Blobs, jetstream.ConsumerConfig{Durable: "blobs",
			FilterSubject: "memmie.blobs.*.*", AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(t, err)
		require.ErrorContains(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{Partitions: 4})),
			"partitions", "a start refuses the unpartitioned stream")

		code, out, _ := executeSplit(t, "streams", "update", "--nats-url", url)
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "MEMMIE_BLOBS: partitions: none on the server, 4 wanted\n")
		assert.Contains(t, out, "MEMMIE_BLOBS: not updated: blob events are not processed yet: consumer blobs has 1 not delivered")

		batch, err := cons.Fetch(1)
		require.NoError(t, err)
		for msg := range batch.Messages() {
			require.NoError(t, msg.DoubleAck(ctx))
		}
		code, out, errOut := executeSplit(t, "streams", "update", "--nats-url", url)
		require.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "MEMMIE_BLOBS: updated\n")
		require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{Partitions: 4})))
		ack, err := js.Publish(ctx, "memmie.blobs.b1.updated", []byte(`{"blob_id": "b1"}`), jetstream.WithMsgID("new-1"))
		require.NoError(t, err)
		msg, err := s.GetMsg(ctx, ack.Sequence)
		require.NoError(t, err)
		partition, published, err := streams.ParseBlobPartitionSubject(msg.Subject)
		require.NoError(t, err, "stored under its partition: %s", msg.Subject)
		assert.Less(t, partition, 4)
		assert.Equal(t, "memmie.blobs.b1.updated", published)
	})

	t.Run("a smaller difference is applied", func(t *testing.T) {
		s, err := js.Stream(ctx, streams.Executions)
		require.NoError(t, err)
		cfg := s.CachedInfo().Config
		cfg.Description = "changed by hand"
		cfg.MaxMsgs = 1000
		_, err = js.UpdateStream(ctx, cfg)
		require.NoError(t, err)

		code, out, errOut := executeSplit(t, "streams", "update", "--nats-url", url)
		require.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "MEMMIE_EXECUTIONS: max_msgs: 1000 on the server, -1 wanted\n")
		assert.Contains(t, out, "MEMMIE_EXECUTIONS: updated\n")
		s, err = js.Stream(ctx, streams.Executions)
		require.NoError(t, err)
		assert.EqualValues(t, -1, s.CachedInfo().Config.MaxMsgs)
	})

	t.Run("replicas a single server cannot hold", func(t *testing.T) {
		code, out, _ := executeSplit(t, "streams", "update", "--nats-url", url, "--replicas", "3")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "MEMMIE_EXECUTIONS: replicas: 1 on the server, 3 wanted\n")
		assert.Contains(t, out, "MEMMIE_EXECUTIONS: not updated")
	})
}

// TestStreamsUpdateOnADevDataDir: memmie dev on a data dir whose MEMMIE_BLOBS an older memmie
// created (not partitioned) refuses to start and names a fix that works with no server
// running: streams update --data-dir, which opens the store itself (refused while a dev holds
// the data dir), after which dev starts.
func TestStreamsUpdateOnADevDataDir(t *testing.T) {
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The store as an older memmie dev left it: MEMMIE_BLOBS without its partitions, and its
	// one blobs consumer having processed every event.
	srv, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(dataDir, "nats"), Port: -1})
	require.NoError(t, err)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	makeOldStreams(ctx, t, js)
	_, err = js.Publish(ctx, "memmie.blobs.b1.created", []byte(`{"blob_id": "b1"}`), jetstream.WithMsgID("old-1"))
	require.NoError(t, err)
	cons, err := js.CreateConsumer(ctx, streams.Blobs, jetstream.ConsumerConfig{Durable: "blobs",
		FilterSubject: "memmie.blobs.*.*", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	batch, err := cons.Fetch(1)
	require.NoError(t, err)
	for msg := range batch.Messages() {
		require.NoError(t, msg.DoubleAck(ctx))
	}
	nc.Close()
	srv.Shutdown()

	dbURL := pgtest.URL(t)
	devArgs := func() []string {
		return []string{"dev", "--data-dir", dataDir, "--database-url", dbURL, "--definitions", t.TempDir(),
			"--http-addr", freeAddr(t), "--nats-listen", freeAddr(t)}
	}
	code, out, errOut := executeSplit(t, devArgs()...)
	require.Equal(t, 1, code, out)
	assert.Contains(t, errOut, "stream MEMMIE_BLOBS: partitions are none on the server, 16 wanted")
	assert.Contains(t, errOut, "apply it with 'memmie streams update' once every blob event is processed "+
		"(the store of a memmie dev: stop it, then add --data-dir <its data dir>)")

	// While a dev holds the data dir, nothing is opened.
	lock, err := devlock.Acquire(dataDir)
	require.NoError(t, err)
	code, _, errOut = executeSplit(t, "streams", "update", "--data-dir", dataDir)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, fmt.Sprintf("data dir %s is in use by a memmie dev (pid %d): stop it, then update", dataDir, os.Getpid()))
	require.NoError(t, lock.Release())

	code, out, errOut = executeSplit(t, "streams", "update", "--data-dir", dataDir, "--dry-run")
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "MEMMIE_BLOBS: partitions: none on the server, 16 wanted\n")
	assert.NotContains(t, out, "updated")
	code, out, errOut = executeSplit(t, "streams", "update", "--data-dir", dataDir)
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "MEMMIE_BLOBS: updated\n")
	code, out, errOut = executeSplit(t, "streams", "show", "--data-dir", dataDir)
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "MEMMIE_BLOBS: as wanted\n")

	dev := startBackground(t, devArgs()...)
	dev.ready(t)
	require.NoError(t, dev.stop(t))

	t.Run("a dev started with --nats-config", func(t *testing.T) {
		dataDir := t.TempDir()
		srv, err := natsserver.Start(natsserver.Config{ConfigFile: "../../nats.conf", StoreDir: filepath.Join(dataDir, "nats"), Port: -1})
		require.NoError(t, err)
		user, password, err := configEngineUser("../../nats.conf")
		require.NoError(t, err)
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, password), nats.CustomInboxPrefix(events.EngineInboxPrefix))
		require.NoError(t, err)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		makeOldStreams(ctx, t, js)
		nc.Close()
		srv.Shutdown()

		// Its streams are in the file's account, which the file's engine user reaches.
		code, out, errOut := executeSplit(t, "streams", "update", "--data-dir", dataDir, "--nats-config", "../../nats.conf")
		require.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "MEMMIE_BLOBS: partitions: none on the server, 16 wanted\nMEMMIE_BLOBS: updated\n")
		assert.Contains(t, out, "MEMMIE_EXECUTIONS: as wanted\n")
	})

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", dataDir, "--nats-url", "nats://127.0.0.1:1"}, "--data-dir and --nats-url: give one"},
		{[]string{"--nats-config", "../../nats.conf"}, "--nats-config goes with --data-dir"},
		{[]string{"--data-dir", t.TempDir()}, "no NATS store at"},
	} {
		code, _, errOut := executeSplit(t, append([]string{"streams", "show"}, c.args...)...)
		assert.Equal(t, 1, code, c.args)
		assert.Contains(t, errOut, c.want, c.args)
	}
}

// makeOldStreams creates the engine's streams as an older memmie left them: MEMMIE_BLOBS
// without its partitions.
func makeOldStreams(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	require.NoError(t, stream.EnsureStreams(ctx, js, engine.StreamConfigs(streams.Options{})))
	s, err := js.Stream(ctx, streams.Blobs)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.SubjectTransform = nil
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
}
