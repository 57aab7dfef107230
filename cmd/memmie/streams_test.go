package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
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
