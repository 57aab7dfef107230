package timers_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/handlers/timers"
)

func TestTimerOf(t *testing.T) {
	const id = "e1"
	at := time.Date(2026, 1, 2, 9, 0, 30, 0, time.UTC)
	ref := events.AttemptRef{Run: 2, StepID: "charge", Attempt: 3}
	next := events.AttemptRef{Run: 2, StepID: "charge", Attempt: 4}
	tests := []struct {
		name string
		data events.ExecutionData
		want timers.Timer
		ok   bool
	}{
		{"step timeout (under an older version's filter)", &events.StepScheduled{ExecutionID: id, AttemptRef: ref, Deadline: at},
			timers.Timer{Kind: events.TimerStepTimeout, Ref: ref, At: at}, true},
		{"step retry is for the next attempt", &events.StepRetryScheduled{ExecutionID: id, AttemptRef: ref, NextAttempt: 4, DueAt: at},
			timers.Timer{Kind: events.TimerStepRetry, Ref: next, At: at}, true},
		{"compensation timeout (likewise)", &events.CompensationScheduled{ExecutionID: id, AttemptRef: ref, Deadline: at},
			timers.Timer{Kind: events.TimerCompensationTimeout, Ref: ref, At: at}, true},
		{"compensation retry", &events.CompensationRetryScheduled{ExecutionID: id, AttemptRef: ref, NextAttempt: 4, DueAt: at},
			timers.Timer{Kind: events.TimerCompensationRetry, Ref: next, At: at}, true},
		{"execution deadline", &events.ExecutionStarted{ExecutionID: id, Run: 2, Deadline: at},
			timers.Timer{Kind: events.TimerExecutionDeadline, Ref: events.AttemptRef{Run: 2}, At: at}, true},
		{"execution retry", &events.ExecutionRetryScheduled{ExecutionID: id, Run: 2, DueAt: at},
			timers.Timer{Kind: events.TimerExecutionRetry, Ref: events.AttemptRef{Run: 2}, At: at}, true},
		{"a start without deadline asks for none", &events.ExecutionStarted{ExecutionID: id, Run: 1}, timers.Timer{}, false},
		{"a result asks for none", &events.StepSucceeded{ExecutionID: id, AttemptRef: ref}, timers.Timer{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := timers.TimerOf(events.NewExecution(tt.data, events.SourceCore, at))
			assert.Equal(t, tt.ok, ok)
			if tt.ok {
				assert.Equal(t, tt.want, got)
			}
		})
	}
}
