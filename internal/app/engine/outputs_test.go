package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// noter's workflow runs on every created note (not on the part it derives) and writes three
// operations and one derived blob: four deltas on the note.
const (
	noterProvider = `
provider:
  id: noter
workflows:
  - workflow_id: note
    triggers:
      - event: onCreate
        conditions:
          - {field: metadata.type, operator: eq, value: note}
`
	noteWorkflow = `
id: note
steps:
  - id: write
    type: transform
    input_map:
      delta_operations:
        - {op: add, path: /metadata/a, value: 1}
        - {op: add, path: /metadata/b, value: 2}
        - {op: replace, path: /content, value: written}
      created_blobs:
        - {content: part, metadata: {type: part}}
output_map:
  delta_operations: $.steps.write.output.delta_operations
  created_blobs: $.steps.write.output.created_blobs
`
)

// crashMidOutputPoints are the crash points TestCrashMidOutput covers.
var crashMidOutputPoints = []faults.Point{faults.BlobsOutputDeltaAppended, faults.BlobsOutputDeltasAppended}

// settled waits until a consumer has nothing pending or unacknowledged.
func settled(t *testing.T, c *cluster, streamName, consumer string) {
	t.Helper()
	require.Eventually(t, func() bool {
		s, err := c.admin.Stream(testContext(t), streamName)
		if err != nil {
			return false
		}
		// consumer, or every partition consumer of its name (<consumer>-<partition>).
		consumers, found := s.ListConsumers(testContext(t)), false
		for info := range consumers.Info() {
			if info.Name != consumer && !strings.HasPrefix(info.Name, consumer+"-") {
				continue
			}
			found = true
			if info.NumPending != 0 || info.NumAckPending != 0 {
				return false
			}
		}
		return consumers.Err() == nil && found
	}, waitFor, 20*time.Millisecond, "consumer %s settles", consumer)
}

// TestCrashMidOutput crashes the only process while it writes a completed execution's four
// deltas: after the first, and after all four but before the derived blob's created event.
// Restarted on the same store, the note ends with each delta once, in order, and the derived
// blob exists once.
func TestCrashMidOutput(t *testing.T) {
	tests := []struct {
		at faults.Point
		// deltas and created are what the crash leaves: the note's deltas, and created events
		// of the derived blob.
		deltas, created int
	}{
		{faults.BlobsOutputDeltaAppended, 2, 0},  // the create and the first operation
		{faults.BlobsOutputDeltasAppended, 5, 0}, // every delta, the created event not sent
	}
	require.Len(t, tests, len(crashMidOutputPoints))
	for i, tt := range tests {
		require.Equal(t, crashMidOutputPoints[i], tt.at)
		t.Run(string(tt.at), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, nil, func(cfg *engine.Config) { cfg.Blobs.AckWait = 2 * time.Second })
			p := c.start("p1", func(at faults.Point, _ string) bool { return at == tt.at })
			c.register([]*proc{p}, noteWorkflow, noterProvider)
			publishBlob(t, c.admin, "memmie.blobs.n1.created", `{"blob_id": "n1", "user_id": "u1", "content": "x",
				"metadata": {"type": "note"}}`, "n1-1")
			id := trigger.ExecutionID("n1", "n1-1", "noter", "note")
			child := blob.DerivedBlobID(id, 0)
			p.waitCrashed()
			p.stop()

			d := blobDeltas(t, c.admin, "n1", 1)
			require.Len(t, d, tt.deltas, "the crash comes mid-output")
			createdOf := func() int {
				msgs, err := stream.Load(testContext(t), c.admin, streams.Blobs, "memmie.blobs.*."+child+".created")
				require.NoError(t, err)
				return len(msgs)
			}
			require.Equal(t, tt.created, createdOf())

			c.start("p1", nil)
			d = blobDeltas(t, c.admin, "n1", 5)
			cd := blobDeltas(t, c.admin, child, 1)
			settled(t, c, streams.Executions, "blobs-outputs")
			settled(t, c, streams.Blobs, "blobs")
			d, cd = blobDeltas(t, c.admin, "n1", 5), blobDeltas(t, c.admin, child, 1)

			require.Len(t, d, 5, "each of the execution's deltas once")
			types := []string{}
			for i, x := range d {
				assert.EqualValues(t, i+1, x.Version, "versions count from 1 with no gap")
				if i > 0 {
					assert.Equal(t, blob.ExecutionDeltaID(id, i-1), x.ID)
				}
				types = append(types, x.Type)
			}
			assert.Equal(t, []string{events.DeltaCreate, events.DeltaAdd, events.DeltaAdd, events.DeltaReplace,
				events.DeltaCreateDerived}, types)
			require.Len(t, cd, 1, "the derived blob once")
			assert.Equal(t, events.DeltaCreate, cd[0].Type)
			assert.Equal(t, 1, createdOf(), "its created event once")
			state, err := blob.Fold(d)
			require.NoError(t, err)
			assert.JSONEq(t, `"written"`, string(state.Content))
			assert.JSONEq(t, `{"type": "note", "a": 1, "b": 2}`, string(state.Metadata))
			queued, err := stream.Load(testContext(t), c.admin, streams.Executions, "memmie.executions.*.queued")
			require.NoError(t, err)
			assert.Len(t, queued, 1, "the part triggers nothing; the note one execution")
		})
	}
}

const (
	guardedWorkflow = `
id: guarded
steps:
  - id: write
    type: transform
    input_map:
      delta_operations:
        - {op: add, path: /metadata/a, value: 1}
        - {op: test, path: /metadata/type, value: other}
output_map:
  delta_operations: $.steps.write.output.delta_operations
`
	guardProvider = `
provider:
  id: guard
workflows:
  - workflow_id: guarded
    triggers:
      - event: onCreate
`
)

// TestRejectedOutputShowsOnTheExecution: an output whose test operation fails writes nothing on
// the blob, and the completed execution records why, once; nothing is dead-lettered. Also
// when the rejection reaches an orchestrator that no longer holds the execution in cache (the
// output is written after a restart).
func TestRejectedOutputShowsOnTheExecution(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "cached", true: "after a restart"}[restart], func(t *testing.T) {
			h := newHarness(t, nil, func(c *engine.Config) { c.Blobs.NoOutputs = restart })
			h.register(guardedWorkflow, guardProvider)
			publishBlob(t, h.js, "memmie.blobs.g1.created", `{"blob_id": "g1", "metadata": {"type": "note"}}`, "g1-1")
			id := trigger.ExecutionID("g1", "g1-1", "guard", "guarded")
			if restart {
				h.waitStatus(id, execution.StatusCompleted)
				h.cfg.Blobs.NoOutputs = false
				h.restart()
			}
			s := h.wait(id, "its deltas rejected", func(s *execution.State) bool { return s.DeltasRejected != nil })
			assert.Equal(t, execution.StatusCompleted, s.Status, "the workflow succeeded")
			assert.Equal(t, "g1", s.DeltasRejected.BlobID)
			assert.EqualValues(t, 1, s.DeltasRejected.BlobVersion)
			assert.Equal(t, "delta_operations[1]", s.DeltasRejected.Item)
			assert.Contains(t, s.DeltasRejected.Reason, "test")

			types := h.types(id)
			assert.Equal(t, events.TypeDeltasRejected, types[len(types)-1])
			n := 0
			for _, typ := range types {
				if typ == events.TypeDeltasRejected {
					n++
				}
			}
			assert.Equal(t, 1, n, "recorded once")
			assert.Len(t, blobDeltas(t, h.js, "g1", 1), 1, "nothing of the output is written")
			st := h.eng.Stats()
			assert.Zero(t, st.Loops["blobs-outputs"].DeadLettered, "recorded, not dead-lettered")
			assert.Zero(t, st.Loops["orchestrator"].DeadLettered)
		})
	}
}
