package projections

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestFoldExecution(t *testing.T) {
	const id = "0b9e3f5c-2a51-4d8e-9f7a-1c2d3e4f5a6b"
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	ev := func(d events.ExecutionData) Event {
		seq++
		return Event{Event: events.NewExecution(d, "test", at.Add(time.Duration(seq)*time.Second)), Seq: seq}
	}
	prio := 9
	queued := ev(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", WorkflowRevision: 3, Priority: 5, Input: map[string]any{"a": 1}})
	started := ev(&events.ExecutionStarted{ExecutionID: id, Run: 1})
	step := ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 1}})
	compensating := ev(&events.ExecutionCompensating{ExecutionID: id, Run: 1, Outcome: events.OutcomeFailed})
	retry := ev(&events.ExecutionRetryScheduled{ExecutionID: id, Run: 1, Error: events.ExecutionError{Code: "c", Message: "m"}, RetryCount: 1})
	requeued := ev(&events.ExecutionRequeued{ExecutionID: id, Run: 2, RetryCount: 1, Priority: &prio})
	started2 := ev(&events.ExecutionStarted{ExecutionID: id, Run: 2})
	staleEnd := ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: "stale"})
	completed := ev(&events.ExecutionCompleted{ExecutionID: id, Run: 2, Output: "done"})

	fold := func(evs ...Event) *execution {
		t.Helper()
		var r *execution
		for _, e := range evs {
			var err error
			r, _, err = foldExecution(r, e)
			require.NoError(t, err)
		}
		return r
	}

	require.Nil(t, fold(started), "no row without its queued event")

	r := fold(queued)
	require.Equal(t, "queued", r.Status)
	require.Equal(t, 1, r.Run)
	require.Equal(t, 5, r.Priority)
	require.JSONEq(t, `{"a":1}`, string(r.Input))
	require.Equal(t, queued.Time, r.QueuedAt)

	r = fold(queued, started, step, compensating)
	require.Equal(t, "compensating", r.Status)
	require.Equal(t, started.Time, r.StartedAt)
	require.Equal(t, compensating.Time, r.UpdatedAt, "a step event leaves the row alone")

	r = fold(queued, started, compensating, retry, requeued)
	require.Equal(t, "queued", r.Status)
	require.Equal(t, 2, r.Run)
	require.Equal(t, 9, r.Priority)
	require.True(t, r.StartedAt.IsZero())
	require.JSONEq(t, `{"code":"c","message":"m"}`, string(r.Error), "the last run's error stays")

	r = fold(queued, started, compensating, retry, requeued, started2, staleEnd, completed)
	require.Equal(t, "completed", r.Status)
	require.JSONEq(t, `"done"`, string(r.Output))
	require.Nil(t, r.Error)
	require.Equal(t, completed.Time, r.EndedAt)
	require.Equal(t, completed.Time, r.UpdatedAt)

	// Applying any event a second time changes nothing.
	for _, e := range []Event{queued, started, compensating, retry, requeued, started2, completed} {
		again, changed, err := foldExecution(r, e)
		require.NoError(t, err)
		require.False(t, changed, "%s applied twice", e.Type)
		require.Equal(t, r, again)
	}

	// A cancel while a retry waits ends the run that waited to be queued.
	cancelled := ev(&events.ExecutionCancelled{ExecutionID: id, Run: 2})
	r = fold(queued, started, compensating, retry, cancelled)
	require.Equal(t, "cancelled", r.Status)
	require.Equal(t, 2, r.Run)
	require.Equal(t, cancelled.Time, r.EndedAt)

	_, _, err := foldExecution(nil, Event{Event: events.NewExecution(&events.ExecutionQueued{ExecutionID: "not-a-uuid"}, "t", at), Seq: 99})
	require.ErrorContains(t, err, "not-a-uuid")
}

// A rejection of a completed run's output is kept as the core's state keeps it: once, on the
// completed run, with its time; any other is stale and changes nothing.
func TestFoldExecutionDeltasRejected(t *testing.T) {
	const id = "0b9e3f5c-2a51-4d8e-9f7a-1c2d3e4f5a6b"
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	ev := func(d events.ExecutionData) Event {
		seq++
		return Event{Event: events.NewExecution(d, "test", at.Add(time.Duration(seq)*time.Second)), Seq: seq}
	}
	queued := ev(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", WorkflowRevision: 1, BlobID: "b1"})
	started := ev(&events.ExecutionStarted{ExecutionID: id, Run: 1})
	completed := ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1, Output: "done"})
	failed := ev(&events.ExecutionFailed{ExecutionID: id, Run: 1, Error: events.ExecutionError{Code: "c", Message: "m"}})
	rejected := ev(&events.DeltasRejected{ExecutionID: id, Run: 1, BlobID: "b1", BlobVersion: 3,
		Item: "delta_operations[1]", Reason: "test operation failed"})
	again := ev(&events.DeltasRejected{ExecutionID: id, Run: 1, BlobID: "b1", BlobVersion: 4, Item: "output", Reason: "other"})
	otherRun := ev(&events.DeltasRejected{ExecutionID: id, Run: 2, BlobID: "b1", BlobVersion: 3, Item: "output", Reason: "r"})
	want := `{"blob_id":"b1","blob_version":3,"item":"delta_operations[1]","reason":"test operation failed",` +
		`"rejected_at":"` + rejected.Time.Format(time.RFC3339Nano) + `"}`

	for _, tc := range []struct {
		name    string
		history []Event
		want    string // the row's deltas_rejected; "" for none
		updated Event  // the event whose time is the row's updated_at
	}{
		{"on the completed run", []Event{queued, started, completed, rejected}, want, rejected},
		{"the first of two is kept", []Event{queued, started, completed, rejected, again}, want, rejected},
		{"a rejection twice", []Event{queued, started, completed, rejected, rejected}, want, rejected},
		{"of another run", []Event{queued, started, completed, otherRun}, "", completed},
		{"while running", []Event{queued, started, rejected}, "", started},
		{"of a failed run", []Event{queued, started, failed, rejected}, "", failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *execution
			for _, e := range tc.history {
				var err error
				r, _, err = foldExecution(r, e)
				require.NoError(t, err)
			}
			if tc.want == "" {
				require.Nil(t, r.DeltasRejected)
			} else {
				require.JSONEq(t, tc.want, string(r.DeltasRejected))
			}
			require.Equal(t, tc.updated.Time, r.UpdatedAt)
			require.Equal(t, "b1", r.BlobID)
		})
	}

	r, changed, err := foldExecution(nil, rejected)
	require.NoError(t, err)
	require.False(t, changed)
	require.Nil(t, r, "no row without its queued event")
}
