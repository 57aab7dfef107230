package projections

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestFoldStep(t *testing.T) {
	const id = "0b9e3f5c-2a51-4d8e-9f7a-1c2d3e4f5a6b"
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(d events.ExecutionData, ms int) Event {
		return Event{Event: events.NewExecution(d, "test", at.Add(time.Duration(ms)*time.Millisecond+123*time.Nanosecond))}
	}
	ref := func(attempt int) events.AttemptRef { return events.AttemptRef{Run: 1, StepID: "s", Attempt: attempt} }
	req := events.Request{Service: "svc", Method: "POST", Path: "/p", Body: map[string]any{"secret": "xyz"}, TimeoutMS: 500}
	at1 := func(ms int) time.Time { return at.Add(time.Duration(ms) * time.Millisecond) }
	ms := func(n int64) *int64 { return &n }

	for _, tc := range []struct {
		name string
		evs  []Event
		key  events.AttemptRef
		comp bool
		want step // stepKey filled in by the test
	}{{
		name: "scheduled",
		evs:  []Event{ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref(1), Request: req}, 0)},
		key:  ref(1),
		want: step{Status: "scheduled", Request: []byte(`{"service":"svc","method":"POST","path":"/p","body_bytes":16,"timeout_ms":500}`), StartedAt: at1(0)},
	}, {
		name: "reported then succeeded: the report's duration and time",
		evs: []Event{
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref(1), Request: req}, 0),
			ev(&events.StepReported{ExecutionID: id, AttemptRef: ref(1), Response: events.Response{StatusCode: 200, DurationMS: 7}}, 10),
			ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: ref(1), Output: map[string]any{"ok": true}}, 12),
		},
		key: ref(1),
		want: step{Status: "succeeded", Request: []byte(`{"service":"svc","method":"POST","path":"/p","body_bytes":16,"timeout_ms":500}`),
			Output: []byte(`{"ok":true}`), DurationMS: ms(7), StartedAt: at1(0), EndedAt: at1(10)},
	}, {
		name: "retry scheduled",
		evs: []Event{
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref(1), Request: events.Request{Service: "svc", Method: "GET", Path: "/p"}}, 0),
			ev(&events.StepReported{ExecutionID: id, AttemptRef: ref(1), Response: events.Response{StatusCode: 503, ErrorKind: events.ErrorHTTP, DurationMS: 3}}, 5),
			ev(&events.StepRetryScheduled{ExecutionID: id, AttemptRef: ref(1), Error: events.StepError{Kind: events.ErrorHTTP, Message: "503", StatusCode: 503}, NextAttempt: 2}, 6),
		},
		key: ref(1),
		want: step{Status: "retry_scheduled", Request: []byte(`{"service":"svc","method":"GET","path":"/p","body_bytes":0,"timeout_ms":0}`),
			Error: []byte(`{"kind":"http","message":"503","status_code":503}`), DurationMS: ms(3), StartedAt: at1(0), EndedAt: at1(5)},
	}, {
		name: "timed out without a report, then failed for good: the decision's time",
		evs: []Event{
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref(2), Request: events.Request{Service: "svc", Method: "GET", Path: "/p"}}, 100),
			ev(&events.StepRetryScheduled{ExecutionID: id, AttemptRef: ref(2), Error: events.StepError{Kind: events.ErrorTimeout, Message: "t"}}, 600),
			ev(&events.StepFailed{ExecutionID: id, AttemptRef: ref(2), Error: events.StepError{Kind: events.ErrorTimeout, Message: "stopped"}}, 700),
		},
		key: ref(2),
		want: step{Status: "timed_out", Request: []byte(`{"service":"svc","method":"GET","path":"/p","body_bytes":0,"timeout_ms":0}`),
			Error: []byte(`{"kind":"timeout","message":"stopped"}`), DurationMS: ms(500), StartedAt: at1(100), EndedAt: at1(600)},
	}, {
		name: "failed by a timeout",
		evs: []Event{
			ev(&events.StepScheduled{ExecutionID: id, AttemptRef: ref(1), Request: events.Request{Service: "svc", Method: "GET", Path: "/p"}}, 0),
			ev(&events.StepFailed{ExecutionID: id, AttemptRef: ref(1), Error: events.StepError{Kind: events.ErrorTimeout, Message: "t"}}, 40),
		},
		key: ref(1),
		want: step{Status: "timed_out", Request: []byte(`{"service":"svc","method":"GET","path":"/p","body_bytes":0,"timeout_ms":0}`),
			Error: []byte(`{"kind":"timeout","message":"t"}`), DurationMS: ms(40), StartedAt: at1(0), EndedAt: at1(40)},
	}, {
		name: "skipped: attempt 0, the reason in output",
		evs:  []Event{ev(&events.StepSkipped{ExecutionID: id, Run: 1, StepID: "s", Reason: "condition false"}, 3)},
		key:  events.AttemptRef{Run: 1, StepID: "s"},
		want: step{Status: "skipped", Output: []byte(`{"reason":"condition false"}`), DurationMS: ms(0), StartedAt: at1(3), EndedAt: at1(3)},
	}, {
		name: "a step without a request (transform)",
		evs:  []Event{ev(&events.StepSucceeded{ExecutionID: id, AttemptRef: ref(1), Output: 5}, 9)},
		key:  ref(1),
		want: step{Status: "succeeded", Output: []byte(`5`), DurationMS: ms(0), StartedAt: at1(9), EndedAt: at1(9)},
	}, {
		name: "compensation failed",
		evs: []Event{
			ev(&events.CompensationScheduled{ExecutionID: id, AttemptRef: ref(1), Request: events.Request{Service: "svc", Method: "POST", Path: "/undo"}}, 0),
			ev(&events.CompensationReported{ExecutionID: id, AttemptRef: ref(1), Response: events.Response{StatusCode: 500, ErrorKind: events.ErrorHTTP, DurationMS: 2}}, 4),
			ev(&events.CompensationFailed{ExecutionID: id, AttemptRef: ref(1), Error: events.StepError{Kind: events.ErrorHTTP, Message: "500", StatusCode: 500}}, 5),
		},
		key: ref(1), comp: true,
		want: step{Status: "failed", Request: []byte(`{"service":"svc","method":"POST","path":"/undo","body_bytes":0,"timeout_ms":0}`),
			Error: []byte(`{"kind":"http","message":"500","status_code":500}`), DurationMS: ms(2), StartedAt: at1(0), EndedAt: at1(4)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			key := stepKey{ExecutionID: uuid.MustParse(id), Run: tc.key.Run, StepID: tc.key.StepID, Attempt: tc.key.Attempt, Compensation: tc.comp}
			var r *step
			for _, e := range tc.evs {
				k, ok := stepOf(e)
				require.True(t, ok, e.Type)
				require.Equal(t, key, k)
				var err error
				r, _, err = foldStep(r, k, e)
				require.NoError(t, err)
			}
			want := tc.want
			want.stepKey = key
			require.Equal(t, &want, r)

			// Applying any of the events a second time changes nothing.
			for _, e := range tc.evs {
				again, changed, err := foldStep(r, key, e)
				require.NoError(t, err)
				require.False(t, changed, "%s applied twice", e.Type)
				require.Equal(t, r, again)
			}
		})
	}

	// The execution's lifecycle events have no row.
	for _, d := range []events.ExecutionData{
		&events.ExecutionQueued{ExecutionID: id}, &events.ExecutionStarted{ExecutionID: id, Run: 1},
		&events.ExecutionCompleted{ExecutionID: id, Run: 1}, &events.TimerFired{ExecutionID: id, Run: 1, StepID: "s", Attempt: 1},
	} {
		_, ok := stepOf(ev(d, 0))
		require.False(t, ok, "%T", d)
	}

	// The request summary is bounded: a long path is cut, the body is only counted.
	long := strings.Repeat("é", 1000)
	sum, err := summarize(events.Request{Service: "svc", Method: "POST", Path: "/" + long, Body: "BODY" + long})
	require.NoError(t, err)
	var s requestSummary
	require.NoError(t, json.Unmarshal(sum, &s))
	require.True(t, s.Truncated)
	require.LessOrEqual(t, len(s.Path), maxPathBytes)
	require.True(t, strings.HasPrefix("/"+long, s.Path), "cut on a rune's boundary")
	require.Equal(t, 2006, s.BodyBytes)
	require.NotContains(t, string(sum), "BODY")
}
