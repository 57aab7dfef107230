package blobs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/blobs"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

const waitFor = 20 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type env struct {
	t  *testing.T
	js jetstream.JetStream
	nc *nats.Conn
}

func newEnv(t *testing.T) *env {
	_, nc, js := natstest.Run(t)
	cfgs := append(streams.Configs(streams.Options{}), streams.TriggersConfig(streams.Options{}))
	require.NoError(t, stream.EnsureStreams(testContext(t), js, cfgs))
	return &env{t: t, js: js, nc: nc}
}

// handler starts a blob handler; hooks, when given, inject faults.
func (e *env) handler(hooks ...faults.Hook) *blobs.Handler {
	t := e.t
	cfg := blobs.Config{
		DeadLetter:   deadletter.NewWriter(e.js, deadletter.Config{}),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		RetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond,
		// Redeliveries after an injected crash come soon.
		AckWait: time.Second,
	}
	if len(hooks) > 0 {
		cfg.Hooks = hooks[0]
	}
	h, err := blobs.New(e.js, cfg)
	require.NoError(t, err)
	require.NoError(t, h.Start(testContext(t)))
	t.Cleanup(func() { require.NoError(t, h.Stop(context.Background())) })
	require.NoError(t, h.Assign(testContext(t), allPartitions()))
	return h
}

// allPartitions are the partitions of MEMMIE_BLOBS with the default options.
func allPartitions() []int {
	all := make([]int, streams.DefaultPartitions)
	for i := range all {
		all[i] = i
	}
	return all
}

// publish publishes a blob event as a client would, with a Nats-Msg-Id.
func (e *env) publish(subject, body, msgID string) {
	e.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = []byte(body)
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	_, err := e.js.PublishMsg(testContext(e.t), msg)
	require.NoError(e.t, err)
}

// deltas returns the blob's deltas.
func (e *env) deltas(blobID string) []events.Delta {
	e.t.Helper()
	msgs, err := stream.Load(testContext(e.t), e.js, streams.Deltas, "memmie.deltas."+blobID)
	require.NoError(e.t, err)
	var out []events.Delta
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(e.t, err)
		d := ev.Data.(*events.Delta)
		require.Equal(e.t, d.ID, m.Header.Get(jetstream.MsgIDHeader), "Nats-Msg-Id is the delta's id")
		require.Equal(e.t, d.ID, ev.ID, "the envelope's id is the delta's id")
		out = append(out, *d)
	}
	return out
}

// waitDeltas waits until the blob has n deltas.
func (e *env) waitDeltas(blobID string, n int) []events.Delta {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	var got []events.Delta
	for time.Now().Before(deadline) {
		if got = e.deltas(blobID); len(got) >= n {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("blob %s: %d deltas within %s, want %d", blobID, len(got), waitFor, n)
	return nil
}

// request is a trigger request as the writer appended it.
type request struct {
	MsgID, Correlation string
	Seq                uint64
	*events.TriggerRequested
}

// requests returns the trigger requests on memmie.triggers.<blob_id>, in stream order (the
// stream is a work queue with no consumer here: they stay).
func (e *env) requests(blobID string) []request {
	e.t.Helper()
	ctx := testContext(e.t)
	s, err := e.js.Stream(ctx, streams.Triggers)
	require.NoError(e.t, err)
	info, err := s.Info(ctx)
	require.NoError(e.t, err)
	var out []request
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(e.t, err)
		if m.Subject != "memmie.triggers."+blobID {
			continue
		}
		ev, err := events.Decode(m.Data)
		require.NoError(e.t, err)
		out = append(out, request{MsgID: m.Header.Get(jetstream.MsgIDHeader), Correlation: m.Header.Get(events.HeaderCorrelationID),
			Seq: seq, TriggerRequested: ev.Data.(*events.TriggerRequested)})
	}
	return out
}

// waitRequests waits until the blob has n trigger requests.
func (e *env) waitRequests(blobID string, n int) []request {
	e.t.Helper()
	var got []request
	require.Eventually(e.t, func() bool { got = e.requests(blobID); return len(got) >= n }, waitFor, 20*time.Millisecond,
		"blob %s: want %d trigger requests", blobID, n)
	return got
}

// deadLetters waits until the handler dead-lettered n messages.
func (e *env) deadLetters(n int) []*events.DeadLetter {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	var out []*events.DeadLetter
	for time.Now().Before(deadline) {
		msgs, err := stream.Load(testContext(e.t), e.js, streams.DeadLetter, "memmie.deadletter."+blobs.Name)
		require.NoError(e.t, err)
		out = out[:0]
		for _, m := range msgs {
			ev, err := events.Decode(m.Data)
			require.NoError(e.t, err)
			out = append(out, ev.Data.(*events.DeadLetter))
		}
		if len(out) >= n {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%d dead letters within %s, want %d", len(out), waitFor, n)
	return nil
}

func TestCreatedAndUpdatedBecomeDeltasAndTriggerRequests(t *testing.T) {
	e := newEnv(t)
	e.handler()
	e.publish("memmie.blobs.b1.created", `{"blob_id": "b1", "user_id": "u1", "content": "hello", "metadata": {"type": "note", "status": "draft"}}`, "ev-1")
	e.publish("memmie.blobs.b1.updated", `{"blob_id": "b1", "metadata": {"status": "final", "tags": ["a"]}}`, "ev-2")
	d := e.waitDeltas("b1", 2)
	require.Len(t, d, 2)
	assert.Equal(t, events.DeltaCreate, d[0].Type)
	assert.EqualValues(t, 1, d[0].Version)
	assert.EqualValues(t, 0, d[0].BaseVersion)
	assert.Equal(t, "ev-1", d[0].Metadata.SourceEventID)
	assert.JSONEq(t, `{"content": "hello", "metadata": {"status": "draft", "type": "note"}}`, string(d[0].NewValue))
	assert.Equal(t, events.DeltaUpdate, d[1].Type)
	assert.EqualValues(t, 2, d[1].Version)
	// The metadata is merged (RFC 7396): type stays, status changes, tags is added.
	assert.JSONEq(t, `{"metadata": {"status": "final", "tags": ["a"], "type": "note"}}`, string(d[1].NewValue))

	// Each recorded event asks the matcher, with the blob after it.
	got := e.waitRequests("b1", 2)
	require.Len(t, got, 2)
	first := got[0]
	assert.Equal(t, events.TriggerRequestID("b1", "ev-1"), first.MsgID, "a deterministic Nats-Msg-Id")
	assert.Equal(t, "ev-1", first.Correlation, "the correlation id is the blob event's")
	assert.Equal(t, "ev-1", first.EventID)
	assert.Equal(t, events.BlobCreated, first.Kind)
	assert.Equal(t, "u1", first.Event.UserID)
	assert.JSONEq(t, `"hello"`, string(first.Event.Content))
	assert.Nil(t, first.Event.ProviderIDs, "absent provider_ids stay absent")
	assert.EqualValues(t, 1, first.Blob.Version)
	assert.JSONEq(t, `{"type": "note", "status": "draft"}`, string(first.Blob.Metadata))
	second := got[1]
	assert.Equal(t, events.BlobUpdated, second.Kind)
	assert.EqualValues(t, 2, second.Blob.Version)
	assert.JSONEq(t, `{"type": "note", "status": "final", "tags": ["a"]}`, string(second.Blob.Metadata))
	assert.JSONEq(t, `"hello"`, string(second.Blob.Content))
}

func TestRefusalsAreDeadLetteredAndTheConsumerGoesOn(t *testing.T) {
	e := newEnv(t)
	e.handler()
	e.publish("memmie.blobs.gone.created", `{"blob_id": "gone", "metadata": {}}`, "g-1")
	e.publish("memmie.blobs.gone.deleted", `{"blob_id": "gone"}`, "g-2")
	e.waitDeltas("gone", 2)
	cases := []struct {
		subject, body string
		reason        string
	}{
		{"memmie.blobs.x1.created", `{"blob_id": "x1",`, "invalid_json"},
		{"memmie.blobs.x2.created", `{"blob_id": "x2", "metadata": [1]}`, "invalid_event"},
		{"memmie.blobs.x3.created", `{"blob_id": "other"}`, "blob_id_mismatch"},
		{"memmie.blobs.x4.updated", `{"blob_id": "x4", "content": 1}`, "blob_not_found"},
		{"memmie.blobs.gone.updated", `{"blob_id": "gone", "content": 1}`, "blob_deleted"},
		{"memmie.blobs.gone.created", `{"blob_id": "gone"}`, "blob_exists"},
	}
	for i, c := range cases {
		e.publish(c.subject, c.body, fmt.Sprintf("bad-%d", i))
	}
	// The consumer goes on: an event after the refused ones is recorded.
	e.publish("memmie.blobs.after.created", `{"blob_id": "after", "metadata": {"type": "note"}}`, "after-1")
	e.waitDeltas("after", 1)

	letters := e.deadLetters(len(cases))
	require.Len(t, letters, len(cases))
	for _, c := range cases {
		i := slices.IndexFunc(letters, func(dl *events.DeadLetter) bool {
			return dl.Subject == c.subject && strings.HasPrefix(dl.Reason, c.reason+":")
		})
		if assert.GreaterOrEqual(t, i, 0, "a dead letter of %s with reason %s in %v", c.subject, c.reason, letters) {
			assert.Equal(t, streams.Blobs, letters[i].Stream)
			assert.Equal(t, c.body, string(letters[i].Data))
		}
	}
	assert.Len(t, e.deltas("gone"), 2, "refused events write nothing")
	assert.Empty(t, e.deltas("x4"))
	e.waitRequests("after", 1)
	assert.Len(t, e.requests("gone"), 2)
	for _, id := range []string{"x1", "x2", "x3", "x4"} {
		assert.Empty(t, e.requests(id), "refused events ask for nothing")
	}
}

// TestCrashBetweenDeltaAndRequestAsksOnce: a crash after the delta is appended and before the
// trigger request (faults.BlobsAppended) leaves the event unacked; its redelivery finds the
// delta (the duplicate path) and appends the request, once, at the event's version, however
// often the event comes.
func TestCrashBetweenDeltaAndRequestAsksOnce(t *testing.T) {
	e := newEnv(t)
	var crashed atomic.Bool
	e.handler(func(_ context.Context, at faults.Point, blobID string) error {
		if at == faults.BlobsAppended && blobID == "b2" && crashed.CompareAndSwap(false, true) {
			return faults.ErrCrash
		}
		return nil
	})
	envelope := `{"specversion": "1.0", "id": "studio-42", "source": "/studio", "type": "memmie.blob.created",
		"data": {"blob_id": "b2", "user_id": "u1", "metadata": {"type": "note"}}}`
	e.publish("memmie.blobs.b2.created", envelope, "msg-1")
	got := e.waitRequests("b2", 1)
	require.True(t, crashed.Load(), "the crash was injected")
	assert.Equal(t, events.TriggerRequestID("b2", "studio-42"), got[0].MsgID)
	assert.EqualValues(t, 1, got[0].Blob.Version)
	// A re-publish past the duplicate window (another Nats-Msg-Id, the same envelope id) asks
	// again under the same request id, which the stream drops.
	e.publish("memmie.blobs.b2.created", envelope, "msg-2")
	// A later event proves the re-publish was processed before it (one key, in order).
	e.publish("memmie.blobs.b2.updated", `{"blob_id": "b2", "content": "x"}`, "msg-3")
	d := e.waitDeltas("b2", 2)
	require.Len(t, d, 2, "one delta for the created event, however often it came")
	assert.Equal(t, "studio-42", d[0].Metadata.SourceEventID)
	got = e.waitRequests("b2", 2)
	require.Len(t, got, 2, "one request for the created event, however often it came")
	assert.Equal(t, "msg-3", got[1].EventID)
	assert.EqualValues(t, 2, got[1].Blob.Version)
}

// Two handlers (two processes) record 20 concurrent updates of one blob: the versions are
// 1..21 with no gap and no event twice.
func TestConcurrentUpdatesOnTwoHandlersAreGapless(t *testing.T) {
	e := newEnv(t)
	a, b := e.handler(nil), e.handler(nil)
	e.publish("memmie.blobs.c1.created", `{"blob_id": "c1", "metadata": {}}`, "c-0")
	e.waitDeltas("c1", 1)
	const n = 20
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.publish("memmie.blobs.c1.updated", fmt.Sprintf(`{"blob_id": "c1", "metadata": {"k%d": %d}}`, i, i), fmt.Sprintf("c-%d", i))
		}()
	}
	wg.Wait()
	d := e.waitDeltas("c1", n+1)
	require.Len(t, d, n+1)
	seen := map[string]bool{}
	for i, x := range d {
		assert.EqualValues(t, i+1, x.Version, "versions count from 1 with no gap")
		assert.False(t, seen[x.Metadata.SourceEventID], "event %s recorded twice", x.Metadata.SourceEventID)
		seen[x.Metadata.SourceEventID] = true
	}
	last := d[n]
	for i := 1; i <= n; i++ {
		assert.Contains(t, string(last.NewValue), fmt.Sprintf(`"k%d":%d`, i, i), "every update is in the last version")
	}
	sa, sb := a.StoreStats(), b.StoreStats()
	t.Logf("handled %d and %d; conflicts %d and %d; history loads %d and %d",
		a.Stats().Handled, b.Stats().Handled, sa.Conflicts, sb.Conflicts, sa.HistoryLoads, sb.HistoryLoads)
}

// TestAssignConsumesItsPartitionsOnly: a handler records the events of the partitions it is
// assigned, and those of a partition it gets later from where that partition's consumer
// stands; a partition out of range is refused.
func TestAssignConsumesItsPartitionsOnly(t *testing.T) {
	e := newEnv(t)
	cfg := blobs.Config{DeadLetter: deadletter.NewWriter(e.js, deadletter.Config{}), NoOutputs: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))}
	h, err := blobs.New(e.js, cfg)
	require.NoError(t, err)
	ctx := testContext(t)
	require.NoError(t, h.Start(ctx))
	t.Cleanup(func() { require.NoError(t, h.Stop(context.Background())) })
	require.ErrorContains(t, h.Assign(ctx, []int{streams.DefaultPartitions}), "not within 0 to 15")

	partitionOf := func(blobID string) int {
		s, err := e.js.Stream(ctx, streams.Blobs)
		require.NoError(t, err)
		m, err := s.GetLastMsgForSubject(ctx, "memmie.blobs.*."+blobID+".created")
		require.NoError(t, err)
		p, _, err := streams.ParseBlobPartitionSubject(m.Subject)
		require.NoError(t, err)
		return p
	}
	var ids []string
	for i := 0; len(ids) < 2; i++ {
		id := fmt.Sprintf("a%d", i)
		e.publish("memmie.blobs."+id+".created", fmt.Sprintf(`{"blob_id": %q}`, id), id)
		if len(ids) == 0 || partitionOf(id) != partitionOf(ids[0]) {
			ids = append(ids, id)
		}
	}
	mine, other := partitionOf(ids[0]), partitionOf(ids[1])
	require.NoError(t, h.Assign(ctx, []int{mine}))
	assert.Equal(t, []int{mine}, h.Partitions())
	e.waitDeltas(ids[0], 1)
	assert.Empty(t, e.deltas(ids[1]), "partition %d is not this handler's", other)

	require.NoError(t, h.Assign(ctx, []int{other}))
	assert.Equal(t, []int{other}, h.Partitions())
	e.waitDeltas(ids[1], 1)
	e.publish("memmie.blobs."+ids[0]+".updated", fmt.Sprintf(`{"blob_id": %q, "content": 1}`, ids[0]), ids[0]+"-1")
	e.publish("memmie.blobs."+ids[1]+".updated", fmt.Sprintf(`{"blob_id": %q, "content": 1}`, ids[1]), ids[1]+"-1")
	e.waitDeltas(ids[1], 2)
	assert.Len(t, e.deltas(ids[0]), 1, "partition %d was given up", mine)
}
