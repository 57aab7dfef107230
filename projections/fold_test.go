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
