package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func fields(diffs []streams.Difference) map[string]streams.Kind {
	out := map[string]streams.Kind{}
	for _, d := range diffs {
		out[d.Field] = d.Kind
	}
	return out
}

func TestDiff(t *testing.T) {
	inbox := streams.InboxConfig(streams.Options{})
	exec, err := streams.Config(streams.Executions, streams.Options{})
	require.NoError(t, err)

	t.Run("same configuration", func(t *testing.T) {
		assert.Empty(t, streams.Diff(inbox, inbox))
		assert.Empty(t, streams.Diff(exec, exec))
	})

	t.Run("what the server puts in place of a zero is no difference", func(t *testing.T) {
		wanted := jetstream.StreamConfig{Name: "WORK", Subjects: []string{"work.>"}, Storage: jetstream.MemoryStorage}
		server := wanted
		server.Replicas, server.MaxMsgs, server.MaxBytes, server.MaxMsgsPerSubject = 1, -1, -1, -1
		server.MaxConsumers, server.MaxMsgSize, server.Duplicates = -1, -1, 2*time.Minute
		assert.Empty(t, streams.Diff(server, wanted))
	})

	t.Run("partitions refuse, naming both numbers and the fix", func(t *testing.T) {
		diffs := streams.Diff(inbox, streams.InboxConfig(streams.Options{Partitions: 4}))
		require.Len(t, diffs, 1)
		assert.Equal(t, streams.Refuse, diffs[0].Kind)
		assert.Equal(t, "stream MEMMIE_INBOX: partitions are 16 on the server, 4 wanted: start with --partitions 16, "+
			"or change them with 'memmie streams update --partitions 4' on an empty inbox "+
			"(the store of a memmie dev: stop it, then add --data-dir <its data dir>)", diffs[0].String())
	})

	t.Run("replicas refuse", func(t *testing.T) {
		diffs := streams.Diff(streams.InboxConfig(streams.Options{Replicas: 3}), inbox)
		require.Len(t, diffs, 1)
		assert.Equal(t, streams.Refuse, diffs[0].Kind)
		assert.Equal(t, "stream MEMMIE_INBOX: replicas are 3 on the server, 1 wanted: start with --replicas 3, "+
			"or change them with 'memmie streams update --replicas 1'", diffs[0].String())
	})

	t.Run("storage refuses", func(t *testing.T) {
		mem, err := streams.Config(streams.Executions, streams.Options{Storage: jetstream.MemoryStorage})
		require.NoError(t, err)
		diffs := streams.Diff(mem, exec)
		assert.Equal(t, map[string]streams.Kind{"storage": streams.Refuse, "compression": streams.Warn}, fields(diffs))
		assert.Contains(t, diffs[0].String(), "storage is memory on the server, file wanted")
	})

	t.Run("limits, description and flags memmie no longer needs warn", func(t *testing.T) {
		server := exec
		server.MaxMsgs = 1000
		server.Description = "old"
		server.AllowRollup = true
		server.AllowDirect = false // reads fall back to the leader
		assert.Equal(t, map[string]streams.Kind{"max_msgs": streams.Warn, "description": streams.Warn, "allow_rollup_hdrs": streams.Warn,
			"allow_direct": streams.Warn},
			fields(streams.Diff(server, exec)))
	})

	t.Run("a missing flag or subject memmie relies on refuses", func(t *testing.T) {
		server := inbox
		server.AllowMsgSchedules, server.AllowRollup, server.Discard = false, false, jetstream.DiscardNew
		server.Subjects = inbox.Subjects[:1]
		got := fields(streams.Diff(server, inbox))
		assert.Equal(t, streams.Refuse, got["allow_msg_schedules"])
		assert.Equal(t, streams.Refuse, got["allow_rollup_hdrs"])
		assert.Equal(t, streams.Refuse, got["subjects"])
		assert.Equal(t, streams.Warn, got["discard"])
		server = exec
		server.DenyPurge = true
		assert.Equal(t, map[string]streams.Kind{"deny_purge": streams.Refuse}, fields(streams.Diff(server, exec)))
	})

	t.Run("what the server never turns off is no difference", func(t *testing.T) {
		// An executions stream of an older memmie had timers' schedules, and so roll-ups and
		// discard old; the server cannot disable schedules.
		old := exec
		old.AllowMsgSchedules, old.AllowRollup, old.Discard = true, true, jetstream.DiscardOld
		assert.Empty(t, streams.Diff(old, exec))
	})

	t.Run("apply overlays the differences on the server's configuration", func(t *testing.T) {
		server := streams.InboxConfig(streams.Options{Partitions: 16})
		server.Metadata = map[string]string{"owner": "ops"}
		server.MaxMsgs = 5
		wanted := streams.InboxConfig(streams.Options{Partitions: 4})
		got := streams.Apply(server, wanted, streams.Diff(server, wanted))
		assert.Empty(t, streams.Diff(got, wanted))
		assert.Equal(t, map[string]string{"owner": "ops"}, got.Metadata, "what memmie does not set is kept")
		n, ok := streams.PartitionsOf(got)
		assert.True(t, ok)
		assert.Equal(t, 4, n)
	})
}

// An executions stream created by an older memmie (schedules, roll-ups, discard old) is what an
// update can reach: the server refuses to turn schedules off.
func TestServerKeepsSchedulesOfOldExecutions(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	exec, err := streams.Config(streams.Executions, streams.Options{})
	require.NoError(t, err)
	old := exec
	old.AllowMsgSchedules, old.AllowRollup, old.Discard = true, true, jetstream.DiscardOld
	_, err = js.CreateStream(ctx, old)
	require.NoError(t, err)
	_, err = js.UpdateStream(ctx, exec)
	require.Error(t, err, "schedules cannot be disabled")
}
