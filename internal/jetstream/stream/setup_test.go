package stream_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/logbuf"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestCheckServerVersion(t *testing.T) {
	tests := []struct {
		version string
		ok      bool
	}{
		{"2.15.0", true},
		{"2.15.2", true},
		{"v2.15.2", true},
		{"2.16.0-RC.1", true},
		{"3.0.0", true},
		{"2.15.0-beta.3", false},
		{"2.14.9", false},
		{"2.12.1", false},
		{"1.99.99", false},
		{"", false},
		{"2.15", false},
		{"two.15.0", false},
	}
	for _, tt := range tests {
		err := stream.CheckServerVersion(tt.version)
		if tt.ok {
			assert.NoError(t, err, tt.version)
			continue
		}
		if assert.Error(t, err, tt.version) {
			assert.Contains(t, err.Error(), "nats-server 2.15.0 or later", tt.version)
		}
	}
}

func ctx20(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func serverConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx20(t), name)
	require.NoError(t, err)
	return s.CachedInfo().Config
}

func TestEnsureNeverRewritesAStream(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx := ctx20(t)
	opts := streams.Options{Storage: jetstream.MemoryStorage}
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(opts)}))
	// Again with the same configuration: nothing to say.
	var log logbuf.Buffer
	require.NoError(t, stream.Ensure(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(opts)}, slog.New(slog.NewTextHandler(&log, nil))))
	assert.Empty(t, log.String())

	t.Run("other partitions refuse, and nothing is created", func(t *testing.T) {
		other := opts
		other.Partitions = 4
		exec, err := streams.Config(streams.Executions, other)
		require.NoError(t, err)
		err = stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{exec, streams.InboxConfig(other)})
		var mismatch *stream.MismatchError
		require.ErrorAs(t, err, &mismatch)
		assert.Contains(t, err.Error(), "stream MEMMIE_INBOX: partitions are 16 on the server, 4 wanted: start with --partitions 16, "+
			"or change them with 'memmie streams update --partitions 4' on an empty inbox")
		n, ok := streams.PartitionsOf(serverConfig(t, js, streams.Inbox))
		assert.True(t, ok)
		assert.Equal(t, 16, n, "the transform is left as it was")
		_, err = js.Stream(ctx, streams.Executions)
		assert.ErrorIs(t, err, jetstream.ErrStreamNotFound, "a refused start creates nothing")
	})

	t.Run("other storage refuses", func(t *testing.T) {
		err := stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(streams.Options{})})
		require.ErrorAs(t, err, new(*stream.MismatchError))
		assert.Contains(t, err.Error(), "stream MEMMIE_INBOX: storage is memory on the server, file wanted")
		assert.Equal(t, jetstream.MemoryStorage, serverConfig(t, js, streams.Inbox).Storage)
	})

	t.Run("a smaller difference warns and is left", func(t *testing.T) {
		cfg := streams.InboxConfig(opts)
		cfg.Description = "something else"
		cfg.MaxMsgSize = 1 << 10
		var log logbuf.Buffer
		require.NoError(t, stream.Ensure(ctx, js, []jetstream.StreamConfig{cfg}, slog.New(slog.NewTextHandler(&log, nil))))
		assert.Contains(t, log.String(), "field=description")
		assert.Contains(t, log.String(), "field=max_msg_size")
		assert.Contains(t, log.String(), "memmie streams update")
		got := serverConfig(t, js, streams.Inbox)
		assert.Equal(t, streams.InboxConfig(opts).Description, got.Description)
		assert.EqualValues(t, streams.MaxMsgSize, got.MaxMsgSize)
	})

	t.Run("update applies the differences and keeps stored commands", func(t *testing.T) {
		// A command stored under partition 11 of 16 ...
		_, err := js.Publish(ctx, "memmie.inbox.x", []byte(`{}`), jetstream.WithMsgID("x-1"))
		require.NoError(t, err)
		stored, err := stream.LeaderLastBySubject(ctx, js, streams.Inbox, streams.SubjectInboxPartitions)
		require.NoError(t, err)

		other := opts
		other.Partitions = 4
		cfg := streams.InboxConfig(other)
		cfg.Description = "commands"
		statuses, err := stream.Compare(ctx, js, []jetstream.StreamConfig{cfg})
		require.NoError(t, err)
		require.Len(t, statuses, 1)
		require.Len(t, statuses[0].Differences, 2)
		require.NoError(t, stream.Update(ctx, js, statuses[0]))

		got := serverConfig(t, js, streams.Inbox)
		assert.Empty(t, streams.Diff(got, cfg))
		n, _ := streams.PartitionsOf(got)
		assert.Equal(t, 4, n)
		// ... is still where it was (update does not move messages; the CLI refuses a
		// partitions change while any is stored).
		again, err := stream.LeaderLastBySubject(ctx, js, streams.Inbox, stored.Subject)
		require.NoError(t, err)
		assert.Equal(t, stored.Sequence, again.Sequence)
		require.NoError(t, stream.Ensure(ctx, js, []jetstream.StreamConfig{cfg}, nil), "a start with the new configuration goes on")
	})

	t.Run("update refuses what the server cannot change", func(t *testing.T) {
		statuses, err := stream.Compare(ctx, js, []jetstream.StreamConfig{streams.InboxConfig(streams.Options{})})
		require.NoError(t, err)
		err = stream.Update(ctx, js, statuses[0])
		require.Error(t, err)
		assert.Contains(t, err.Error(), "cannot change this in place")
		assert.Contains(t, err.Error(), "storage")
	})
}

// A server that drops a setting memmie relies on is refused at creation; here a server without
// JetStream's atomic publish is simulated by a stream that exists without it.
func TestEnsureRefusesAMissingCapability(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx := ctx20(t)
	cfg, err := streams.Config(streams.Executions, streams.Options{Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	without := cfg
	without.AllowAtomicPublish = false
	_, err = js.CreateStream(ctx, without)
	require.NoError(t, err)
	err = stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{cfg})
	require.ErrorAs(t, err, new(*stream.MismatchError))
	assert.Contains(t, err.Error(), "allow_atomic is false on the server, true wanted: memmie needs it; apply it with 'memmie streams update'")
}

// apiSpy counts the JetStream API requests on a stream's message subjects: it subscribes next
// to the server, which answers them as ever.
func apiSpy(t *testing.T, nc *nats.Conn, name string) (leader, direct func() int) {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	for _, subj := range []string{"$JS.API.STREAM.MSG.GET." + name, "$JS.API.DIRECT.GET." + name, "$JS.API.DIRECT.GET." + name + ".>"} {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			if len(m.Subject) >= len("$JS.API.DIRECT") && m.Subject[:len("$JS.API.DIRECT")] == "$JS.API.DIRECT" {
				counts["direct"]++
			} else {
				counts["leader"]++
			}
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(t, nc.Flush())
	get := func(k string) func() int {
		return func() int {
			require.NoError(t, nc.Flush())
			mu.Lock()
			defer mu.Unlock()
			return counts[k]
		}
	}
	return get("leader"), get("direct")
}

// The reads whose answer decides a write ask the stream leader, not a direct get that a
// lagging replica may answer: an append's own-event check after a conflict, a chained
// append's resume, the end of a load. On one server both give the same answer, so the test
// watches which API is asked.
func TestReadsThatDecideAWriteAskTheLeader(t *testing.T) {
	srv, _, js := natstest.Run(t)
	spyConn, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(spyConn.Close)
	ctx := ctx20(t)
	cfg := executionsConfig("MEMMIE_EXECUTIONS_LEADER")
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{cfg}))
	name := cfg.Name
	leader, direct := apiSpy(t, spyConn, name)

	check := func(what string, f func()) {
		t.Helper()
		l0, d0 := leader(), direct()
		f()
		require.Eventually(t, func() bool { return leader() > l0 }, 10*time.Second, 10*time.Millisecond, "%s asks the leader", what)
		assert.Equal(t, d0, direct(), "%s makes no direct get", what)
	}

	msgs := events("e1", "a", 2)
	expect := stream.Expect{FilterSubject: filter("e1")}
	_, err = stream.Append(ctx, js, name, msgs, expect)
	require.NoError(t, err)
	check("an append retried after a lost ack", func() {
		ack, err := stream.Append(ctx, js, name, msgs, expect)
		require.NoError(t, err)
		assert.True(t, ack.Duplicate)
	})
	chained := events("e2", "c", 3)
	_, err = stream.AppendChained(ctx, js, name, chained[:1], stream.Expect{FilterSubject: filter("e2")})
	require.NoError(t, err)
	check("a chained append that resumes", func() {
		ack, err := stream.AppendChained(ctx, js, name, chained, stream.Expect{FilterSubject: filter("e2")})
		require.NoError(t, err)
		assert.True(t, ack.Duplicate)
	})
	check("a load", func() {
		got, err := stream.Load(ctx, js, name, filter("e2"))
		require.NoError(t, err)
		assert.Len(t, got, 3)
	})

	// LastBySubject stays a direct get, for reads whose staleness is harmless.
	d0 := direct()
	_, err = stream.LastBySubject(ctx, js, name, filter("e1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return direct() > d0 }, 10*time.Second, 10*time.Millisecond)
}

func TestLeaderLastBySubject(t *testing.T) {
	js, name := newStream(t)
	ctx := ctx20(t)
	_, err := stream.LeaderLastBySubject(ctx, js, name, filter("e1"))
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	_, err = stream.Append(ctx, js, name, events("e1", "a", 3), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)
	m, err := stream.LeaderLastBySubject(ctx, js, name, filter("e1"))
	require.NoError(t, err)
	assert.Equal(t, uint64(3), m.Sequence)
	assert.Equal(t, "memmie.executions.e1.event2", m.Subject)
	assert.Equal(t, "e1-a-2", m.Header.Get(jetstream.MsgIDHeader))
	assert.JSONEq(t, `{"tag":"a","i":2}`, string(m.Data))
	assert.WithinDuration(t, time.Now(), m.Time, time.Minute)
	_, err = stream.LeaderLastBySubject(ctx, js, "NO_SUCH_STREAM", filter("e1"))
	require.Error(t, err)
}
