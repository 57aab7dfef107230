package blobs_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/blobs"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/blobstore"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// execution appends a triggered execution's queued and completed events as the orchestrator
// would; msgID, when set, replaces the completed event's Nats-Msg-Id (a copy past the
// duplicate window).
func (e *env) execution(id, blobID string, baseVersion int64, output any, msgID string) {
	e.t.Helper()
	now := time.Now()
	for _, ev := range []events.Event{
		events.NewExecution(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", WorkflowRevision: 2,
			ProviderID: "summaries", BlobID: blobID, BaseVersion: baseVersion, SourceEventID: "src-1"}, events.SourceTriggers, now),
		events.NewExecution(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: output}, events.SourceCore, now),
	} {
		data, err := events.Marshal(ev)
		require.NoError(e.t, err)
		msg := nats.NewMsg(ev.Subject)
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if msgID != "" && ev.Type == events.TypeExecutionCompleted {
			msg.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		_, err = e.js.PublishMsg(testContext(e.t), msg)
		require.NoError(e.t, err)
	}
}

// waitOutputs waits until the outputs consumer has settled n completed events.
func (e *env) waitOutputs(n uint64) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		c, err := e.js.Consumer(testContext(e.t), streams.Executions, blobs.Name+"-outputs")
		if err != nil {
			return false
		}
		info, err := c.Info(testContext(e.t))
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer >= n
	}, waitFor, 10*time.Millisecond)
}

func TestCompletedExecutionWritesItsDeltasOnce(t *testing.T) {
	e := newEnv(t)
	e.handler()
	e.publish("memmie.blobs.o1.created", `{"blob_id": "o1", "user_id": "u1", "content": "a", "metadata": {"type": "note"}}`, "o1-1")
	e.waitDeltas("o1", 1)
	output := map[string]any{
		"delta_operations": []any{
			map[string]any{"op": "add", "path": "/metadata/summary", "value": "s"},
			map[string]any{"op": "replace", "path": "/metadata/type", "value": "summarized"},
		},
		"transformed_content": "A",
		"created_blobs":       []any{map[string]any{"content": "child", "metadata": map[string]any{"type": "part"}}},
	}

	// A write cut short: the execution's first delta is on the blob already.
	store, err := blobstore.New[blob.State](e.js, blobstore.Config{})
	require.NoError(t, err)
	cur, err := store.Get(testContext(t), "o1")
	require.NoError(t, err)
	x := blob.Execution{ExecutionID: "x1", WorkflowID: "wf", WorkflowRevision: 2, ProviderID: "summaries", BlobID: "o1",
		BaseVersion: 1, SourceEventID: "src-1", Output: output}
	res, err := blob.Deltas(cur.State, x, time.Now())
	require.NoError(t, err)
	_, err = store.Append(testContext(t), cur, res.Deltas[0])
	require.NoError(t, err)

	e.execution("x1", "o1", 1, output, "")
	e.waitDeltas("o1", 5)
	// Delivered again past the duplicate window: nothing more is written.
	e.execution("x1", "o1", 1, output, "x1-completed-again")
	e.waitOutputs(2)
	e.publish("memmie.blobs.o1.updated", `{"blob_id": "o1", "content": "b"}`, "o1-2")
	d := e.waitDeltas("o1", 6)
	require.Len(t, d, 6)
	types := []string{}
	for i, x := range d {
		assert.EqualValues(t, i+1, x.Version)
		types = append(types, x.Type)
	}
	assert.Equal(t, []string{events.DeltaCreate, events.DeltaAdd, events.DeltaReplace, events.DeltaTransform,
		events.DeltaCreateDerived, events.DeltaUpdate}, types, "each of the execution's deltas once")
	for i, x := range d[1:5] {
		assert.Equal(t, blob.ExecutionDeltaID("x1", i), x.ID)
		assert.EqualValues(t, 1, x.BaseVersion)
		assert.Equal(t, events.DeltaMetadata{WorkflowID: "wf", WorkflowRevision: 2, ExecutionID: "x1", SourceEventID: "src-1"}, x.Metadata)
	}

	// The derived blob became a blob of its own, one derivation deeper, and triggered.
	child := blob.DerivedBlobID("x1", 0)
	cd := e.waitDeltas(child, 1)
	require.Len(t, cd, 1)
	assert.Equal(t, events.DeltaCreate, cd[0].Type)
	assert.Equal(t, &events.Derivation{BlobID: "o1", ExecutionID: "x1", Depth: 1}, cd[0].Metadata.DerivedFrom)
	assert.Equal(t, "u1", cd[0].Metadata.UserID, "the owner's")
	req := e.waitRequests(child, 1)
	assert.Equal(t, &events.Derivation{BlobID: "o1", ExecutionID: "x1", Depth: 1}, req[0].Event.DerivedFrom,
		"the matcher gets the derivation, for its bound")
}

// inboxCommand waits for the last command on the inbox of an execution and decodes it.
func (e *env) inboxCommand(executionID string) events.Event {
	e.t.Helper()
	s, err := e.js.Stream(testContext(e.t), streams.Inbox)
	require.NoError(e.t, err)
	var m *jetstream.RawStreamMsg
	require.Eventually(e.t, func() bool {
		m, err = s.GetLastMsgForSubject(testContext(e.t), "memmie.inbox.*."+executionID)
		return err == nil
	}, waitFor, 10*time.Millisecond, "a command on the inbox of %s", executionID)
	ev, err := events.Decode(m.Data)
	require.NoError(e.t, err)
	assert.Equal(e.t, ev.ID, m.Header.Get(jetstream.MsgIDHeader))
	return ev
}

func TestRejectedOutputIsRecordedOnTheExecution(t *testing.T) {
	e := newEnv(t)
	// The orchestrator's inbox, which the rejection is sent to.
	require.NoError(t, stream.EnsureStreams(testContext(t), e.js, []jetstream.StreamConfig{streams.InboxConfig(streams.Options{})}))
	h := e.handler(nil)
	e.publish("memmie.blobs.r1.created", `{"blob_id": "r1", "metadata": {"v": 1}}`, "r1-1")
	e.waitDeltas("r1", 1)
	guarded := map[string]any{"delta_operations": []any{
		map[string]any{"op": "add", "path": "/metadata/ok", "value": true},
		map[string]any{"op": "test", "path": "/metadata/v", "value": 2},
		map[string]any{"op": "add", "path": "/metadata/never", "value": true},
	}}
	e.execution("x3", "r1", 1, guarded, "")
	ev := e.inboxCommand("x3")
	assert.Equal(t, events.TypeDeltasRejected, ev.Type)
	assert.Equal(t, events.SourceBlobs, ev.Source)
	rej := ev.Data.(*events.DeltasRejected)
	assert.Equal(t, "delta_operations[1]", rej.Item)
	assert.Contains(t, rej.Reason, "test")
	assert.Equal(t, events.DeltasRejected{ExecutionID: "x3", Run: 1, BlobID: "r1", BlobVersion: 1,
		Item: rej.Item, Reason: rej.Reason}, *rej)
	e.waitOutputs(1)
	assert.Zero(t, h.OutputStats().DeadLettered, "a rejection is recorded on the execution, not dead-lettered")

	// The orchestrator records it; then the blob changes so that the output would apply. A
	// delivery of the completed event again writes nothing: what was rejected stays rejected.
	rec := events.NewExecution(rej, events.SourceBlobs, time.Now())
	data, err := events.Marshal(rec)
	require.NoError(t, err)
	_, err = e.js.Publish(testContext(t), rec.Subject, data, jetstream.WithMsgID(rec.ID))
	require.NoError(t, err)
	e.publish("memmie.blobs.r1.updated", `{"blob_id": "r1", "metadata": {"v": 2}}`, "r1-2")
	e.waitDeltas("r1", 2)
	e.execution("x3", "r1", 1, guarded, "x3-completed-again")
	e.waitOutputs(2)

	// The blob's other deltas go on.
	e.publish("memmie.blobs.r1.updated", `{"blob_id": "r1", "content": 2}`, "r1-3")
	d := e.waitDeltas("r1", 3)
	require.Len(t, d, 3, "nothing of the rejected output is written")
	for _, x := range d[1:] {
		assert.Equal(t, events.DeltaUpdate, x.Type)
	}
	assert.Zero(t, h.OutputStats().DeadLettered)
}
