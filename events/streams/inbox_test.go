package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestParseInboxPartitionSubject(t *testing.T) {
	tests := []struct {
		subject   string
		partition int
		id        string
		ok        bool
	}{
		{"memmie.inbox.0.e1", 0, "e1", true},
		{"memmie.inbox.15.0b7f3c1e-8d2a", 15, "0b7f3c1e-8d2a", true},
		{"memmie.inbox.e1", 0, "", false},
		{"memmie.inbox.x.e1", 0, "", false},
		{"memmie.inbox.-1.e1", 0, "", false},
		{"memmie.inbox.01.e1", 0, "", false},
		{"memmie.inbox.1.e1.more", 0, "", false},
		{"memmie.timers.1.e1", 0, "", false},
	}
	for _, tt := range tests {
		p, id, err := streams.ParseInboxPartitionSubject(tt.subject)
		if !tt.ok {
			assert.Error(t, err, tt.subject)
			continue
		}
		require.NoError(t, err, tt.subject)
		assert.Equal(t, tt.partition, p, tt.subject)
		assert.Equal(t, tt.id, id, tt.subject)
	}
	assert.Equal(t, "memmie.inbox.7.*", streams.InboxPartitionFilter(7))
	assert.Equal(t, streams.DefaultPartitions, streams.InboxPartitions(streams.Options{}))
	assert.Equal(t, 4, streams.InboxPartitions(streams.Options{Partitions: 4}))
}

// The inbox's subject transform partitions commands by execution id, the same way whether a
// client publishes them or a message schedule fires them, and one consumer per partition sees
// only its own.
func TestInboxPartitions(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 4
	s, err := js.CreateOrUpdateStream(ctx, streams.InboxConfig(streams.Options{Partitions: n}))
	require.NoError(t, err)
	assert.Equal(t, "memmie.inbox.{{partition(4,1)}}.{{wildcard(1)}}", s.CachedInfo().Config.SubjectTransform.Destination)

	// Published commands: each execution's lands on one partition, and the ids spread.
	partitionOf := map[string]int{}
	for i := range 40 {
		id := fmt.Sprintf("exec-%d", i)
		ack, err := js.Publish(ctx, events.InboxSubject(id), []byte(id))
		require.NoError(t, err)
		m, err := s.GetMsg(ctx, ack.Sequence)
		require.NoError(t, err)
		p, got, err := streams.ParseInboxPartitionSubject(m.Subject)
		require.NoError(t, err, m.Subject)
		assert.Equal(t, id, got)
		assert.Less(t, p, n)
		partitionOf[id] = p
	}
	used := map[int]bool{}
	for _, p := range partitionOf {
		used[p] = true
	}
	assert.Len(t, used, n, "40 ids spread over every partition")

	// A second command of an execution goes to the same partition.
	ack, err := js.Publish(ctx, events.InboxSubject("exec-3"), []byte("again"))
	require.NoError(t, err)
	m, err := s.GetMsg(ctx, ack.Sequence)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("memmie.inbox.%d.exec-3", partitionOf["exec-3"]), m.Subject)

	// A schedule fires into the execution's partition.
	sched := nats.NewMsg("memmie.timers.exec-7.t1")
	sched.Data = []byte("fired")
	sched.Header.Set("Nats-Schedule", "@at "+time.Now().Add(-time.Second).UTC().Format(time.RFC3339))
	sched.Header.Set("Nats-Schedule-Target", events.InboxSubject("exec-7"))
	_, err = js.PublishMsg(ctx, sched)
	require.NoError(t, err)
	want := fmt.Sprintf("memmie.inbox.%d.exec-7", partitionOf["exec-7"])
	require.Eventually(t, func() bool {
		m, err := s.GetLastMsgForSubject(ctx, want)
		return err == nil && string(m.Data) == "fired"
	}, 10*time.Second, 20*time.Millisecond, "the fired schedule is stored on %s", want)

	// One consumer per partition, on the work queue: each gets its partition's commands only.
	p := partitionOf["exec-7"]
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.Inbox, jetstream.ConsumerConfig{
		Durable: "p", FilterSubject: streams.InboxPartitionFilter(p), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(ctx, streams.Inbox, jetstream.ConsumerConfig{
		Durable: "other", FilterSubject: streams.InboxPartitionFilter((p + 1) % n), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err, "partition consumers do not overlap on the work queue")
	batch, err := cons.FetchNoWait(100)
	require.NoError(t, err)
	var got []string
	for m := range batch.Messages() {
		_, id, err := streams.ParseInboxPartitionSubject(m.Subject())
		require.NoError(t, err)
		got = append(got, id)
		assert.Equal(t, p, partitionOf[id], "%s on partition %d", id, p)
	}
	assert.Contains(t, got, "exec-7")
}

func TestLeasesConfig(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := streams.LeasesConfig(streams.Options{})
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	require.NoError(t, err)
	assert.True(t, s.CachedInfo().Config.AllowMsgTTL)

	subject, err := streams.MemberSubject("p1")
	require.NoError(t, err)
	assert.Equal(t, "memmie.leases.members.p1", subject)
	_, err = streams.MemberSubject("a.b")
	assert.Error(t, err)
	leader, err := streams.LeaderSubject("dispatcher")
	require.NoError(t, err)
	assert.Equal(t, "memmie.leases.leader.dispatcher", leader)

	// A message with a TTL disappears on its own.
	msg := nats.NewMsg(subject)
	msg.Header.Set("Nats-TTL", "1s")
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := s.GetLastMsgForSubject(ctx, subject)
		return err != nil
	}, 10*time.Second, 50*time.Millisecond)
}
