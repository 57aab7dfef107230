package execution_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// oneTransform completes within its start.
const oneTransform = `
id: summarize
steps:
  - {id: sum, type: transform, input_map: {delta_operations: [{op: test, path: /metadata/v, value: 2}]}}
`

// rejectDeltas is the blobs handler's command for the run given (0: the current one).
func rejectDeltas(runN int, item string) input {
	return func(r *run) events.Event {
		r.tick()
		run := runN
		if run == 0 {
			run = r.s.Run
		}
		return events.NewExecution(&events.DeltasRejected{ExecutionID: execID, Run: run, BlobID: "b1", BlobVersion: 4,
			Item: item, Reason: "test operation failed"}, events.SourceBlobs, r.now)
	}
}

func TestDeltasRejected(t *testing.T) {
	recorded := func(item string) func(t *testing.T, r *run) {
		return func(t *testing.T, r *run) {
			assert.Equal(t, execution.StatusCompleted, r.s.Status, "the workflow succeeded: it stays completed")
			require.NotNil(t, r.s.DeltasRejected)
			assert.Equal(t, execution.DeltasRejection{BlobID: "b1", BlobVersion: 4, Item: item,
				Reason: "test operation failed", RejectedAt: t0.Add(2 * time.Second)}, *r.s.DeltasRejected)
			assert.Equal(t, execution.Pending{}, r.s.Pending(), "nothing is under way")
			var view map[string]any
			require.NoError(t, json.Unmarshal([]byte(stateJSON(t, r.s)), &view))
			assert.Equal(t, "completed", view["status"])
			assert.Equal(t, map[string]any{"blob_id": "b1", "blob_version": 4.0, "item": item,
				"reason": "test operation failed", "rejected_at": "2026-01-02T09:00:02Z"}, view["deltas_rejected"])
		}
	}
	stale := func(n int, reason string) func(t *testing.T, r *run) {
		return func(t *testing.T, r *run) {
			assert.Nil(t, r.s.DeltasRejected)
			assert.Equal(t, n, r.s.StaleCount)
			assert.Contains(t, r.s.Stale[len(r.s.Stale)-1].Reason, reason)
		}
	}
	cases := []ruleCase{
		{
			name:     "a completed run's rejected output is recorded and decides nothing",
			workflow: oneTransform,
			moves: []move{
				{start(), []events.Type{stepSucceeded, completed}},
				{rejectDeltas(0, "delta_operations[0]"), nothing},
			},
			check: recorded("delta_operations[0]"),
		},
		{
			name:     "a rejection sent again is stale",
			workflow: oneTransform,
			moves: []move{
				{start(), []events.Type{stepSucceeded, completed}},
				{rejectDeltas(0, "delta_operations[0]"), nothing},
				{again(), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, 1, r.s.StaleCount)
				assert.Contains(t, r.s.Stale[0].Reason, "already recorded")
			},
		},
		{
			name:     "a second, different rejection keeps the first",
			workflow: oneTransform,
			moves: []move{
				{start(), []events.Type{stepSucceeded, completed}},
				{rejectDeltas(0, "delta_operations[0]"), nothing},
				{rejectDeltas(0, "created_blobs[0]"), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, "delta_operations[0]", r.s.DeltasRejected.Item)
				assert.Equal(t, 1, r.s.StaleCount)
			},
		},
		{
			name:     "a rejection of a run that is not the completed one is stale",
			workflow: oneTransform,
			moves: []move{
				{start(), []events.Type{stepSucceeded, completed}},
				{rejectDeltas(2, "delta_operations[0]"), nothing},
			},
			check: stale(1, "run 2 is not the completed run 1"),
		},
		{
			name:     "a running execution has written no output: stale",
			workflow: threeSteps,
			opts:     []queueOpt{withInput(map[string]any{"blob_id": "b1"})},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{rejectDeltas(0, "output"), nothing},
				{ok("load", map[string]any{"content": "c"}), []events.Type{stepSucceeded, stepScheduled}},
			},
			check: stale(1, "the execution is running, not completed"),
		},
		{
			name:     "a failed execution writes no delta: stale",
			workflow: threeSteps,
			opts:     []queueOpt{withInput(map[string]any{"blob_id": "b1"})},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("load", 404, nil), []events.Type{stepFailed, compensating, failed}},
				{rejectDeltas(0, "output"), nothing},
			},
			check: stale(1, "the execution is failed, not completed"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t, tc.workflow, tc.opts...)
			for i, m := range tc.moves {
				in := m.in(r)
				got := r.feed(in)
				require.Equal(t, m.want, types(got), "move %d (%s)", i, in.Type)
			}
			tc.check(t, r)
			folded, err := execution.Fold(r.history)
			require.NoError(t, err)
			assert.Equal(t, stateJSON(t, r.s), stateJSON(t, folded))
		})
	}
}
