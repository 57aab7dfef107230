package projections

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestFoldQueued(t *testing.T) {
	const id = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	ev := func(d events.ExecutionData) Event {
		seq++
		return Event{Event: events.NewExecution(d, "test", at.Add(time.Duration(seq)*time.Second)), Seq: seq}
	}
	prio := 9
	due := at.Add(time.Hour)
	queued := ev(&events.ExecutionQueued{ExecutionID: id, WorkflowID: "wf", WorkflowRevision: 3, Priority: 5, MaxRetries: 2,
		ProviderID: "prov", BlobID: "blob-1", SourceEventID: "evt-1"})
	started := ev(&events.ExecutionStarted{ExecutionID: id, Run: 1})
	step := ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 1}})
	compensating := ev(&events.ExecutionCompensating{ExecutionID: id, Run: 1, Outcome: events.OutcomeFailed})
	retry := ev(&events.ExecutionRetryScheduled{ExecutionID: id, Run: 1, RetryCount: 1, DueAt: due})
	requeued := ev(&events.ExecutionRequeued{ExecutionID: id, Run: 2, RetryCount: 1, Priority: &prio})
	started2 := ev(&events.ExecutionStarted{ExecutionID: id, Run: 2})
	staleEnd := ev(&events.ExecutionCompleted{ExecutionID: id, Run: 1})
	completed2 := ev(&events.ExecutionCompleted{ExecutionID: id, Run: 2})
	failed := ev(&events.ExecutionFailed{ExecutionID: id, Run: 1})
	cancelled := ev(&events.ExecutionCancelled{ExecutionID: id, Run: 1})
	cancelledWaiting := ev(&events.ExecutionCancelled{ExecutionID: id, Run: 2})
	manual := ev(&events.ExecutionRequeued{ExecutionID: id, Run: 2, Manual: true})

	exec := uuid.MustParse(id)
	// want is the row after queued; each case says what differs.
	base := queueRow{
		ID: queuedRowID(exec), ExecutionID: exec, WorkflowID: "wf", WorkflowRevision: 3, Priority: 5,
		Status: "pending", MaxRetries: 2, ProviderID: "prov", Trigger: "evt-1", BlobID: "blob-1",
		QueuedAt: queued.Time, CreatedAt: queued.Time, UpdatedAt: queued.Time, Run: 1,
	}
	with := func(f func(*queueRow)) *queueRow {
		r := base
		f(&r)
		return &r
	}
	for _, tc := range []struct {
		name   string
		events []Event
		want   *queueRow
	}{
		{"no row without its queued event", []Event{started, completed2}, nil},
		{"queued", []Event{queued}, &base},
		{"started", []Event{queued, started, step}, with(func(r *queueRow) {
			r.Status, r.UpdatedAt = "running", started.Time
		})},
		{"compensating stays running", []Event{queued, started, compensating}, with(func(r *queueRow) {
			r.Status, r.UpdatedAt = "running", started.Time
		})},
		{"retry scheduled waits pending", []Event{queued, started, compensating, retry}, with(func(r *queueRow) {
			r.Status, r.RetryCount, r.RetryAt, r.UpdatedAt = "pending", 1, due, retry.Time
		})},
		{"a retry's wait refuses a stale start", []Event{queued, started, retry, started}, with(func(r *queueRow) {
			r.Status, r.RetryCount, r.RetryAt, r.UpdatedAt = "pending", 1, due, retry.Time
		})},
		{"requeued", []Event{queued, started, retry, requeued}, with(func(r *queueRow) {
			r.Status, r.RetryCount, r.Run, r.Priority = "pending", 1, 2, 9
			r.QueuedAt, r.UpdatedAt = requeued.Time, requeued.Time
		})},
		{"retried and completed", []Event{queued, started, retry, requeued, started2, staleEnd, completed2}, with(func(r *queueRow) {
			r.Status, r.RetryCount, r.Run, r.Priority = "completed", 1, 2, 9
			r.QueuedAt, r.UpdatedAt = requeued.Time, completed2.Time
		})},
		{"failed", []Event{queued, started, failed}, with(func(r *queueRow) {
			r.Status, r.UpdatedAt = "failed", failed.Time
		})},
		{"failed and retried by hand", []Event{queued, started, failed, manual}, with(func(r *queueRow) {
			r.Status, r.Run, r.QueuedAt, r.UpdatedAt = "pending", 2, manual.Time, manual.Time
		})},
		{"cancelled while queued", []Event{queued, cancelled}, with(func(r *queueRow) {
			r.Status, r.UpdatedAt = "cancelled", cancelled.Time
		})},
		{"cancelled while running", []Event{queued, started, cancelled}, with(func(r *queueRow) {
			r.Status, r.UpdatedAt = "cancelled", cancelled.Time
		})},
		{"cancelled while a retry waits", []Event{queued, started, retry, cancelledWaiting}, with(func(r *queueRow) {
			r.Status, r.RetryCount, r.Run, r.UpdatedAt = "cancelled", 1, 2, cancelledWaiting.Time
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *queueRow
			for _, e := range tc.events {
				var err error
				r, _, err = foldQueued(r, e)
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, r)
			if r == nil {
				return
			}
			// Folding any event of the history a second time changes nothing.
			for _, e := range tc.events {
				again, changed, err := foldQueued(r, e)
				require.NoError(t, err)
				require.False(t, changed, "%s applied twice", e.Type)
				require.Equal(t, r, again)
			}
		})
	}

	_, _, err := foldQueued(nil, Event{Event: events.NewExecution(&events.ExecutionQueued{ExecutionID: "not-a-uuid"}, "t", at), Seq: 99})
	require.ErrorContains(t, err, "not-a-uuid")
}
