package stream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

var streamCounter atomic.Int64

// newStream creates a stream shaped like MEMMIE_EXECUTIONS, under a fresh name, on a fresh
// server, and returns its name.
func newStream(t testing.TB, mutate ...func(*jetstream.StreamConfig)) (jetstream.JetStream, string) {
	t.Helper()
	_, _, js := natstest.Run(t)
	cfg := executionsConfig(fmt.Sprintf("MEMMIE_EXECUTIONS_T%d", streamCounter.Add(1)))
	for _, m := range mutate {
		m(&cfg)
	}
	require.NoError(t, stream.EnsureStreams(context.Background(), js, []jetstream.StreamConfig{cfg}))
	return js, cfg.Name
}

// executionsConfig is memmie's MEMMIE_EXECUTIONS configuration under another name.
func executionsConfig(name string) jetstream.StreamConfig {
	cfg, err := streams.Config(streams.Executions, streams.Options{})
	if err != nil {
		panic(err)
	}
	cfg.Name = name
	return cfg
}

func filter(execID string) string { return "memmie.executions." + execID + ".>" }

// events builds n messages for one execution, with IDs unique to tag.
func events(execID, tag string, n int) []stream.Msg {
	msgs := make([]stream.Msg, n)
	for i := range msgs {
		msgs[i] = stream.Msg{
			Subject: fmt.Sprintf("memmie.executions.%s.event%d", execID, i),
			Data:    fmt.Appendf(nil, `{"tag":%q,"i":%d}`, tag, i),
			ID:      fmt.Sprintf("%s-%s-%d", execID, tag, i),
		}
	}
	return msgs
}

func streamMsgCount(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func TestAppendChainsExpectations(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()

	ack, err := stream.Append(ctx, js, name, events("e1", "start", 1), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)
	assert.Equal(t, stream.Ack{Stream: name, LastSeq: 1}, ack)

	ack, err = stream.Append(ctx, js, name, events("e1", "step", 3), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: ack.LastSeq})
	require.NoError(t, err)
	assert.Equal(t, stream.Ack{Stream: name, LastSeq: 4}, ack)

	// Another execution's expectation is independent of e1's messages.
	ack, err = stream.Append(ctx, js, name, events("e2", "start", 2), stream.Expect{FilterSubject: filter("e2")})
	require.NoError(t, err)
	assert.Equal(t, uint64(6), ack.LastSeq)

	got, err := stream.Load(ctx, js, name, filter("e1"))
	require.NoError(t, err)
	want := append(events("e1", "start", 1), events("e1", "step", 3)...)
	require.Len(t, got, len(want))
	for i, m := range got {
		assert.Equal(t, want[i].Subject, m.Subject)
		assert.Equal(t, string(want[i].Data), string(m.Data))
		assert.Equal(t, want[i].ID, m.Header.Get(jetstream.MsgIDHeader))
		assert.Equal(t, uint64(i+1), m.Sequence)
	}
}

func TestAppendExtraHeaders(t *testing.T) {
	js, name := newStream(t)
	msgs := events("e1", "h", 2)
	msgs[0].Header = nats.Header{"Ce-Type": []string{"memmie.execution.started"}}
	msgs[1].Header = nats.Header{"Ce-Type": []string{"memmie.step.completed"}}
	_, err := stream.Append(context.Background(), js, name, msgs, stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)

	got, err := stream.Load(context.Background(), js, name, filter("e1"))
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "memmie.execution.started", got[0].Header.Get("Ce-Type"))
	assert.Equal(t, "memmie.step.completed", got[1].Header.Get("Ce-Type"))
	// Batch headers are stored too; nothing relies on them, but they must not leak into IDs.
	assert.Equal(t, msgs[1].ID, got[1].Header.Get(jetstream.MsgIDHeader))
	assert.Nil(t, msgs[0].Header[jetstream.MsgIDHeader], "the caller's header is not modified")
}

func TestAppendConflict(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		expect func(last uint64) stream.Expect
	}{
		{"single, stale sequence", 1, func(last uint64) stream.Expect {
			return stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last - 1}
		}},
		{"batch, stale sequence", 3, func(last uint64) stream.Expect {
			return stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last - 1}
		}},
		{"single, zero means none yet", 1, func(uint64) stream.Expect { return stream.Expect{FilterSubject: filter("e1")} }},
		{"batch, zero means none yet", 3, func(uint64) stream.Expect { return stream.Expect{FilterSubject: filter("e1")} }},
		{"single, sequence from the future", 1, func(last uint64) stream.Expect {
			return stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last + 10}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, name := newStream(t)
			ctx := context.Background()
			ack, err := stream.Append(ctx, js, name, events("e1", "first", 2), stream.Expect{FilterSubject: filter("e1")})
			require.NoError(t, err)
			before := streamMsgCount(t, js, name)

			_, err = stream.Append(ctx, js, name, events("e1", "late", tt.n), tt.expect(ack.LastSeq))
			require.ErrorIs(t, err, stream.ErrConflict)
			var apiErr *jetstream.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, stream.CodeWrongLastSequence, apiErr.ErrorCode)
			var conflict *stream.ConflictError
			require.ErrorAs(t, err, &conflict)
			assert.Equal(t, filter("e1"), conflict.FilterSubject)

			// All or nothing: not one message of the failed append is stored.
			assert.Equal(t, before, streamMsgCount(t, js, name))
			got, err := stream.Load(ctx, js, name, filter("e1"))
			require.NoError(t, err)
			assert.Len(t, got, 2)
		})
	}
}

type appendFunc func(context.Context, jetstream.JetStream, string, []stream.Msg, stream.Expect) (stream.Ack, error)

func TestAppendRacingWritersOneWins(t *testing.T) {
	tests := []struct {
		name   string
		append appendFunc
		n      int
	}{
		{"single", stream.Append, 1},
		{"batch", stream.Append, 3},
		{"chained", stream.AppendChained, 3},
	}
	for _, tt := range tests {
		n := tt.n
		t.Run(tt.name, func(t *testing.T) {
			js, name := newStream(t)
			ctx := context.Background()
			ack, err := stream.Append(ctx, js, name, events("e1", "start", 1), stream.Expect{FilterSubject: filter("e1")})
			require.NoError(t, err)

			const writers = 8
			var (
				wg        sync.WaitGroup
				wins      atomic.Int64
				conflicts atomic.Int64
				others    = make(chan error, writers)
				start     = make(chan struct{})
			)
			for w := range writers {
				wg.Go(func() {
					<-start
					_, err := tt.append(ctx, js, name, events("e1", fmt.Sprintf("w%d", w), n),
						stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: ack.LastSeq})
					switch {
					case err == nil:
						wins.Add(1)
					case errors.Is(err, stream.ErrConflict):
						conflicts.Add(1)
					default:
						others <- err
					}
				})
			}
			close(start)
			wg.Wait()
			close(others)
			for err := range others {
				t.Errorf("unexpected error: %v", err)
			}
			assert.Equal(t, int64(1), wins.Load())
			assert.Equal(t, int64(writers-1), conflicts.Load())
			assert.Equal(t, uint64(1+n), streamMsgCount(t, js, name))

			// The winner's messages are contiguous and all from one writer.
			got, err := stream.Load(ctx, js, name, filter("e1"))
			require.NoError(t, err)
			require.Len(t, got, 1+n)
			tag := strings.Split(got[1].Header.Get(jetstream.MsgIDHeader), "-")[1]
			for i, m := range got[1:] {
				assert.Equal(t, fmt.Sprintf("e1-%s-%d", tag, i), m.Header.Get(jetstream.MsgIDHeader))
			}
		})
	}
}

func TestAppendRetryIsDuplicate(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		useFilter bool
	}{
		{"single with expectation", 1, true},
		{"batch with expectation", 3, true},
		{"single without expectation", 1, false},
		{"batch without expectation", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, name := newStream(t)
			ctx := context.Background()
			first, err := stream.Append(ctx, js, name, events("e1", "start", 1), stream.Expect{FilterSubject: filter("e1")})
			require.NoError(t, err)

			msgs := events("e1", "step", tt.n)
			expect := stream.Expect{}
			if tt.useFilter {
				expect = stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: first.LastSeq}
			}
			ack, err := stream.Append(ctx, js, name, msgs, expect)
			require.NoError(t, err)
			assert.False(t, ack.Duplicate)

			// The ack was "lost": the writer sends the very same append again.
			retry, err := stream.Append(ctx, js, name, msgs, expect)
			require.NoError(t, err)
			assert.True(t, retry.Duplicate)
			assert.Equal(t, ack.LastSeq, retry.LastSeq)
			assert.Equal(t, uint64(1+tt.n), streamMsgCount(t, js, name))
		})
	}
}

func TestAppendRetryAfterOthers(t *testing.T) {
	// The retry looks at the last message on the subject of its own last message.
	tests := []struct {
		name          string
		mine          int // messages of the first append; the last is on subject event<mine-1>
		wantDuplicate bool
	}{
		// Someone wrote after it on another subject: the retry still recognises its append.
		{"later write on another subject", 2, true},
		// Someone wrote after it on the same subject: a landed append cannot be told from a
		// lost race, so it is a conflict and the writer reloads.
		{"later write on the same subject", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, name := newStream(t)
			ctx := context.Background()
			mine := events("e1", "mine", tt.mine)
			ack, err := stream.Append(ctx, js, name, mine, stream.Expect{FilterSubject: filter("e1")})
			require.NoError(t, err)
			_, err = stream.Append(ctx, js, name, events("e1", "next", 1), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: ack.LastSeq})
			require.NoError(t, err)

			retry, err := stream.Append(ctx, js, name, mine, stream.Expect{FilterSubject: filter("e1")})
			if tt.wantDuplicate {
				require.NoError(t, err)
				assert.Equal(t, stream.Ack{Stream: name, LastSeq: ack.LastSeq, Duplicate: true}, retry)
			} else {
				require.ErrorIs(t, err, stream.ErrConflict)
			}
			assert.Equal(t, uint64(tt.mine+1), streamMsgCount(t, js, name))
		})
	}
}

func TestAppendDuplicateIDInsideBatchStoresNothing(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()
	stored := events("e1", "a", 1)
	ack, err := stream.Append(ctx, js, name, stored, stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)

	// The second message of this batch reuses a stored ID: the whole batch is refused.
	msgs := events("e1", "b", 3)
	msgs[1].ID = stored[0].ID
	_, err = stream.Append(ctx, js, name, msgs, stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: ack.LastSeq})
	require.ErrorIs(t, err, stream.ErrConflict)
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, stream.CodeAtomicPublishDuplicate, apiErr.ErrorCode)
	assert.Equal(t, uint64(1), streamMsgCount(t, js, name))
}

func TestAppendBatchNeedsAtomicPublish(t *testing.T) {
	js, name := newStream(t, func(c *jetstream.StreamConfig) { c.AllowAtomicPublish = false })
	ctx := context.Background()

	_, err := stream.Append(ctx, js, name, events("e1", "a", 2), stream.Expect{FilterSubject: filter("e1")})
	require.Error(t, err)
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, stream.CodeAtomicPublishDisabled, apiErr.ErrorCode)
	assert.Contains(t, err.Error(), "AllowAtomicPublish")
	assert.Zero(t, streamMsgCount(t, js, name))

	// A single message needs no batch.
	_, err = stream.Append(ctx, js, name, events("e1", "a", 1), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)
}

func TestAppendRejectsBadInput(t *testing.T) {
	js, name := newStream(t)
	ok := events("e1", "a", 1)
	tests := []struct {
		name    string
		stream  string
		msgs    []stream.Msg
		expect  stream.Expect
		wantErr string
	}{
		{"no stream", "", ok, stream.Expect{}, "no stream name"},
		{"no messages", name, nil, stream.Expect{}, "no messages"},
		{"no ID", name, []stream.Msg{{Subject: "memmie.executions.e1.x"}}, stream.Expect{}, "has no ID"},
		{"no subject", name, []stream.Msg{{ID: "x"}}, stream.Expect{}, "has no subject"},
		{"reserved header", name, []stream.Msg{{Subject: "memmie.executions.e1.x", ID: "x", Header: nats.Header{"Nats-Expected-Last-Sequence": {"1"}}}}, stream.Expect{}, "reserved header"},
		{"sequence without filter", name, ok, stream.Expect{LastSubjectSeq: 3}, "without a FilterSubject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := stream.Append(context.Background(), js, tt.stream, tt.msgs, tt.expect)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
	assert.Zero(t, streamMsgCount(t, js, name))
}

func TestAppendUnknownStream(t *testing.T) {
	js, _ := newStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range []int{1, 2} {
		_, err := stream.Append(ctx, js, "NOPE", events("e1", "a", n), stream.Expect{})
		require.Error(t, err, "%d messages", n)
		assert.NotErrorIs(t, err, stream.ErrConflict)
	}
}

func TestLastBySubject(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			js, name := newStream(t, func(c *jetstream.StreamConfig) { c.AllowDirect = direct })
			ctx := context.Background()

			_, err := stream.LastBySubject(ctx, js, name, filter("e1"))
			require.ErrorIs(t, err, jetstream.ErrMsgNotFound)

			_, err = stream.Append(ctx, js, name, events("e1", "a", 3), stream.Expect{FilterSubject: filter("e1")})
			require.NoError(t, err)
			_, err = stream.Append(ctx, js, name, events("e2", "a", 1), stream.Expect{FilterSubject: filter("e2")})
			require.NoError(t, err)

			m, err := stream.LastBySubject(ctx, js, name, filter("e1"))
			require.NoError(t, err)
			assert.Equal(t, uint64(3), m.Sequence)
			assert.Equal(t, "memmie.executions.e1.event2", m.Subject)
			assert.Equal(t, "e1-a-2", m.Header.Get(jetstream.MsgIDHeader))
			assert.JSONEq(t, `{"tag":"a","i":2}`, string(m.Data))
			assert.WithinDuration(t, time.Now(), m.Time, time.Minute)

			m, err = stream.LastBySubject(ctx, js, name, "memmie.executions.e1.event0")
			require.NoError(t, err)
			assert.Equal(t, uint64(1), m.Sequence)
		})
	}
}

func TestLoad(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()

	got, err := stream.Load(ctx, js, name, filter("nobody"))
	require.NoError(t, err)
	assert.Empty(t, got)

	// Interleave three executions.
	last := map[string]uint64{}
	want := map[string][]string{}
	for round := range 5 {
		for _, id := range []string{"a", "b", "c"} {
			msgs := events(id, fmt.Sprintf("r%d", round), 1+round%3)
			ack, err := stream.Append(ctx, js, name, msgs, stream.Expect{FilterSubject: filter(id), LastSubjectSeq: last[id]})
			require.NoError(t, err)
			last[id] = ack.LastSeq
			for _, m := range msgs {
				want[id] = append(want[id], m.ID)
			}
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		got, err := stream.Load(ctx, js, name, filter(id))
		require.NoError(t, err)
		var ids []string
		for i, m := range got {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
			if i > 0 {
				assert.Greater(t, m.Sequence, got[i-1].Sequence)
			}
		}
		assert.Equal(t, want[id], ids)
		assert.Equal(t, last[id], got[len(got)-1].Sequence)
	}
}

func TestLoadEndsWhileWritersAppend(t *testing.T) {
	js, name := newStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ack, err := stream.Append(ctx, js, name, events("e1", "seed", 50), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)

	// A writer keeps appending to the same execution while Load reads it.
	var wg sync.WaitGroup
	wg.Go(func() {
		last := ack.LastSeq
		for i := 0; ctx.Err() == nil; i++ {
			a, err := stream.Append(ctx, js, name, events("e1", fmt.Sprintf("more%d", i), 2), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last})
			if err != nil {
				return
			}
			last = a.LastSeq
		}
	})
	loadCtx, loadCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer loadCancel()
	got, err := stream.Load(loadCtx, js, name, filter("e1"))
	cancel()
	wg.Wait()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(got), 50)
	for i, m := range got {
		assert.Equal(t, uint64(i+1), m.Sequence, "a prefix of the history, without gaps")
	}
}

func ExampleAppend() {
	// In a program, js comes from jetstream.New(nc); here from a throwaway server.
	dir, _ := os.MkdirTemp("", "memmie-stream")
	defer os.RemoveAll(dir)
	srv, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	ctx := context.Background()
	cfg := executionsConfig("MEMMIE_EXECUTIONS")
	if err := stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{cfg}); err != nil {
		fmt.Println(err)
		return
	}

	expect := stream.Expect{FilterSubject: "memmie.executions.x1.>"} // nothing stored yet
	ack, err := stream.Append(ctx, js, cfg.Name, []stream.Msg{
		{Subject: "memmie.executions.x1.queued", ID: "x1-0", Data: []byte(`{}`)},
		{Subject: "memmie.executions.x1.started", ID: "x1-1", Data: []byte(`{}`)},
	}, expect)
	fmt.Println(ack.LastSeq, err)

	// A second writer that did not see those events loses.
	_, err = stream.Append(ctx, js, cfg.Name, []stream.Msg{
		{Subject: "memmie.executions.x1.cancelled", ID: "x1-c", Data: []byte(`{}`)},
	}, expect)
	fmt.Println(errors.Is(err, stream.ErrConflict))

	history, _ := stream.Load(ctx, js, cfg.Name, "memmie.executions.x1.>")
	for _, m := range history {
		fmt.Println(m.Sequence, m.Subject)
	}
	// Output:
	// 2 <nil>
	// true
	// 1 memmie.executions.x1.queued
	// 2 memmie.executions.x1.started
}

func TestLoadAfter(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()
	a, err := stream.Append(ctx, js, name, events("e1", "a", 2), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)
	_, err = stream.Append(ctx, js, name, events("e2", "a", 2), stream.Expect{FilterSubject: filter("e2")})
	require.NoError(t, err)
	b, err := stream.Append(ctx, js, name, events("e1", "b", 2), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: a.LastSeq})
	require.NoError(t, err)

	tests := []struct {
		after uint64
		want  []string
	}{
		{0, []string{"e1-a-0", "e1-a-1", "e1-b-0", "e1-b-1"}},
		{1, []string{"e1-a-1", "e1-b-0", "e1-b-1"}},
		{a.LastSeq, []string{"e1-b-0", "e1-b-1"}},
		{a.LastSeq + 1, []string{"e1-b-0", "e1-b-1"}}, // a sequence of another execution
		{b.LastSeq, nil},
		{b.LastSeq + 100, nil},
	}
	for _, tt := range tests {
		got, err := stream.LoadAfter(ctx, js, name, filter("e1"), tt.after)
		require.NoError(t, err)
		var ids []string
		for _, m := range got {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
		assert.Equal(t, tt.want, ids, "after %d", tt.after)
	}
}
