package engine_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

const (
	noteBlob = "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
	noteUser = "7c6b5a49-3828-4716-a5b4-c3d2e1f0a9b8"
)

// publishBlob publishes a client's blob event with a Nats-Msg-Id.
func publishBlob(t testing.TB, js jetstream.JetStream, subject, body, msgID string) {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = []byte(body)
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	_, err := js.PublishMsg(testContext(t), msg)
	require.NoError(t, err)
}

// blobDeltas waits until the blob has at least n deltas and returns them.
func blobDeltas(t testing.TB, js jetstream.JetStream, blobID string, n int) []events.Delta {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var out []events.Delta
	for time.Now().Before(deadline) {
		msgs, err := stream.Load(testContext(t), js, streams.Deltas, "memmie.deltas."+blobID)
		require.NoError(t, err)
		out = out[:0]
		for _, m := range msgs {
			ev, err := events.Decode(m.Data)
			require.NoError(t, err)
			out = append(out, *ev.Data.(*events.Delta))
		}
		if len(out) >= n {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("blob %s: %d deltas within %s, want %d", blobID, len(out), waitFor, n)
	return nil
}

// TestBlobCreatedStartsBlobSummary publishes a client's created event with the shipped
// definitions registered: it becomes the blob's version 1 and starts the blob-summary
// provider's workflow, whose input is the event data plus the blob.
func TestBlobCreatedStartsBlobSummary(t *testing.T) {
	h := newHarness(t, nil)
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	_, err = h.reg.RegisterSet(testContext(t), set)
	require.NoError(t, err)

	publishBlob(t, h.js, "memmie.blobs."+noteBlob+".created", `{"blob_id": "`+noteBlob+`", "user_id": "`+noteUser+`",
		"content": "# Notes", "metadata": {"type": "note"}}`, "note-1")
	d := blobDeltas(t, h.js, noteBlob, 1)
	assert.Equal(t, events.DeltaCreate, d[0].Type)
	assert.EqualValues(t, 1, d[0].Version)

	id := trigger.ExecutionID(noteBlob, "note-1", "blob-summary", "blob_summary")
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status, "error: %+v", s.Error)
	assert.Equal(t, "blob_summary", s.WorkflowID)
	assert.Equal(t, "blob-summary", s.ProviderID)
	assert.Equal(t, noteBlob, s.BlobID)
	assert.Equal(t, "note-1", s.SourceEventID)
	assert.EqualValues(t, 1, s.BaseVersion)
	assert.Equal(t, "workflows[0].triggers[0]", s.Trigger)
	assert.Equal(t, jsonValue(t, `{"blob_id": "`+noteBlob+`", "user_id": "`+noteUser+`", "content": "# Notes",
		"metadata": {"type": "note"},
		"blob": {"blob_id": "`+noteBlob+`", "user_id": "`+noteUser+`", "version": 1, "content": "# Notes",
			"metadata": {"type": "note"}, "deleted": false}}`), s.Input)
	assert.Equal(t, jsonValue(t, `{"delta_operations": [
		{"op": "add", "path": "/metadata/summary", "value": "note blob `+noteBlob+` of user `+noteUser+`"},
		{"op": "add", "path": "/metadata/summarized_by", "value": "blob_summary (`+id+`)"}]}`), s.Output)
	history, err := h.eng.History(testContext(t), id)
	require.NoError(t, err)
	assert.Equal(t, events.SourceTriggers, history[0].Source)

	// Nothing else was started: book-writer's triggers want a chapter or an outline request.
	msgs, err := stream.Load(testContext(t), h.js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(t, err)
	assert.Len(t, msgs, 1, "one execution queued")

	// The execution's output becomes the blob's versions 2 and 3, with its lineage.
	d = blobDeltas(t, h.js, noteBlob, 3)
	require.Len(t, d, 3)
	for i, x := range d[1:] {
		assert.Equal(t, events.DeltaAdd, x.Type)
		assert.EqualValues(t, i+2, x.Version)
		assert.EqualValues(t, 1, x.BaseVersion, "the version the execution read")
		assert.Equal(t, "blob-summary", x.ProviderID)
		assert.Equal(t, blob.ExecutionDeltaID(id, i), x.ID)
		assert.Equal(t, events.DeltaMetadata{WorkflowID: "blob_summary", WorkflowRevision: 1, ExecutionID: id,
			SourceEventID: "note-1"}, x.Metadata)
	}
	assert.Equal(t, "/metadata/summary", d[1].Path)
	assert.JSONEq(t, `"note blob `+noteBlob+` of user `+noteUser+`"`, string(d[1].NewValue))
	assert.Equal(t, "/metadata/summarized_by", d[2].Path)
	state, err := blob.Fold(d)
	require.NoError(t, err)
	assert.JSONEq(t, `{"type": "note", "summary": "note blob `+noteBlob+` of user `+noteUser+`",
		"summarized_by": "blob_summary (`+id+`)"}`, string(state.Metadata))
	st := h.eng.Stats()
	assert.Zero(t, st.Loops["blobs"].DeadLettered)
	assert.Zero(t, st.Loops["blobs-outputs"].DeadLettered)
}

// tagger's workflow runs on every update of a blob and adds a key named after the version it
// read: each execution writes one delta.
const (
	taggerProvider = `
provider:
  id: tagger
workflows:
  - workflow_id: tag
    triggers:
      - event: onUpdate
`
	tagWorkflow = `
id: tag
steps:
  - id: tag
    type: transform
    input_map:
      delta_operations:
        - op: add
          path: "/metadata/seen{$.input.blob.version}"
          value: $.input.blob.version
output_map:
  delta_operations: $.steps.tag.output.delta_operations
`
)

// TestConcurrentBlobWritesOnTwoProcesses sends 20 updates of one blob at once to two
// processes; each update triggers an execution that writes a delta. The blob's versions are
// 1..41 with no gap, every update and every execution's delta once.
func TestConcurrentBlobWritesOnTwoProcesses(t *testing.T) {
	c := newCluster(t, nil, withMaxRunning(50))
	procs := []*proc{c.start("p1", nil), c.start("p2", nil)}
	c.register(procs, tagWorkflow, taggerProvider)
	publishBlob(t, c.admin, "memmie.blobs.busy.created", `{"blob_id": "busy", "metadata": {}}`, "busy-0")
	blobDeltas(t, c.admin, "busy", 1)
	const n = 20
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishBlob(t, c.admin, "memmie.blobs.busy.updated", fmt.Sprintf(`{"blob_id": "busy", "metadata": {"u%d": %d}}`, i, i), fmt.Sprintf("busy-%d", i))
		}()
	}
	wg.Wait()
	c.waitEnded(n, waitFor)
	d := blobDeltas(t, c.admin, "busy", 1+2*n)
	require.Len(t, d, 1+2*n)
	ids := map[string]bool{}
	updates, executions := 0, map[string]int{}
	for i, x := range d {
		require.EqualValues(t, i+1, x.Version, "versions count from 1 with no gap")
		require.False(t, ids[x.ID], "delta %s twice", x.ID)
		ids[x.ID] = true
		switch x.Type {
		case events.DeltaUpdate:
			updates++
		case events.DeltaAdd:
			executions[x.Metadata.ExecutionID]++
		}
	}
	assert.Equal(t, n, updates)
	assert.Len(t, executions, n, "one delta per execution")
	state, err := blob.Fold(d)
	require.NoError(t, err)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(state.Metadata, &meta))
	assert.Len(t, meta, 2*n, "every update's key and every execution's")
	for _, p := range procs {
		st := p.eng.Stats()
		t.Logf("%s: blob events %d, outputs %d, blob store %+v", p.id, st.Loops["blobs"].Handled,
			st.Loops["blobs-outputs"].Handled, st.Blobs)
	}
}

// TestDeactivatedProviderTriggersNothing: only active providers' triggers are matched.
func TestDeactivatedProviderTriggersNothing(t *testing.T) {
	h := newHarness(t, nil)
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	_, err = h.reg.RegisterSet(testContext(t), set)
	require.NoError(t, err)
	_, err = h.reg.Deactivate(testContext(t), definitions.KindProvider, "blob-summary")
	require.NoError(t, err)
	require.NoError(t, h.reg.Sync(testContext(t)))

	publishBlob(t, h.js, "memmie.blobs."+noteBlob+".created", `{"blob_id": "`+noteBlob+`", "user_id": "`+noteUser+`",
		"metadata": {"type": "note"}}`, "note-1")
	blobDeltas(t, h.js, noteBlob, 1)
	// The event's trigger request is settled (its starts are made before its ack): nothing
	// was queued.
	require.Eventually(t, func() bool {
		info, err := h.js.Consumer(testContext(t), streams.Triggers, triggers.Name)
		return err == nil && info.CachedInfo().NumPending == 0 && info.CachedInfo().NumAckPending == 0 &&
			info.CachedInfo().Delivered.Consumer >= 1
	}, waitFor, 10*time.Millisecond)
	msgs, err := stream.Load(testContext(t), h.js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

// TestTriggeredInputAgainstSchemaIsDeadLettered: a blob event whose workflow input breaks the
// input schema (blob_input_schema_v1 wants a user_id) is recorded, starts nothing, and is
// dead-lettered with the schema's problems, once.
func TestTriggeredInputAgainstSchemaIsDeadLettered(t *testing.T) {
	h := newHarness(t, nil)
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	_, err = h.reg.RegisterSet(testContext(t), set)
	require.NoError(t, err)
	publishBlob(t, h.js, "memmie.blobs."+noteBlob+".created", `{"blob_id": "`+noteBlob+`", "metadata": {"type": "note"}}`, "note-1")
	letters := h.deadLetters(1)
	require.Len(t, letters, 1)
	assert.Equal(t, triggers.Name, letters[0].Source)
	assert.Equal(t, "memmie.triggers."+noteBlob, letters[0].Subject, "the trigger request is dead-lettered")
	assert.Equal(t, streams.Triggers, letters[0].Stream)
	assert.Contains(t, letters[0].Reason, "start of workflow blob_summary (provider blob-summary)")
	assert.Contains(t, letters[0].Reason, "user_id")
	assert.Len(t, blobDeltas(t, h.js, noteBlob, 1), 1, "the event is recorded")
	msgs, err := stream.Load(testContext(t), h.js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(t, err)
	assert.Empty(t, msgs)
	assert.Zero(t, h.eng.Stats().Loops["blobs"].Retried, "not retried")
	assert.Zero(t, h.eng.Stats().Triggers.Retried, "not retried")
}
