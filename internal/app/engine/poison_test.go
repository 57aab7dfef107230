package engine_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// deadLetters waits until the dead-letter stream holds n records and returns them.
func (h *harness) deadLetters(n int) []*events.DeadLetter {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	var out []*events.DeadLetter
	for time.Now().Before(deadline) {
		msgs, err := stream.Load(testContext(h.t), h.js, streams.DeadLetter, events.SubjectDeadLetter)
		require.NoError(h.t, err)
		out = out[:0]
		for _, m := range msgs {
			ev, err := events.Decode(m.Data)
			require.NoError(h.t, err)
			dl := ev.Data.(*events.DeadLetter)
			assert.Equal(h.t, "memmie.deadletter."+dl.Source, m.Subject)
			out = append(out, dl)
		}
		if len(out) >= n {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("%d dead letters within %s, want %d", len(out), waitFor, n)
	return nil
}

func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{"ok": true}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: fine
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
`)
	ctx := testContext(t)
	const ghost = "6f1c2d3e-4b5a-4978-8a9b-0c1d2e3f4a5b"
	publish := func(subject string, data []byte, header nats.Header) {
		msg := &nats.Msg{Subject: subject, Data: data, Header: header}
		_, err := h.js.PublishMsg(ctx, msg)
		require.NoError(t, err)
	}
	// Not JSON, on the inbox; with a header that the dead letter must keep.
	publish(events.InboxSubject(ghost), []byte("not json"), nats.Header{"X-Trace": []string{"t-1"}})
	// A well-formed input for an execution that does not exist.
	cancel, err := events.Marshal(events.NewExecution(&events.CancelRequested{ExecutionID: ghost, Run: 1}, events.SourceAPI, time.Now()))
	require.NoError(t, err)
	publish(events.InboxSubject(ghost), cancel, nil)
	// A decision where only the orchestrator's inputs belong.
	completed, err := events.Marshal(events.NewExecution(&events.ExecutionCompleted{ExecutionID: ghost, Run: 1}, events.SourceCore, time.Now()))
	require.NoError(t, err)
	publish(events.InboxSubject(ghost), completed, nil)
	// An envelope of an unknown type where the runner reads, and one where the timers read
	// (they no longer read step.scheduled: the runner enforces attempts' deadlines).
	unknown := func(id string) []byte {
		return []byte(`{"specversion":"1.0","id":"` + id + `","source":"/elsewhere","type":"memmie.execution.step.teleported",` +
			`"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","dataschemaversion":1,"data":{}}`)
	}
	publish("memmie.executions.7a2b3c4d-5e6f-4a0b-9c8d-7e6f5a4b3c2d.step.scheduled", unknown("x1"), nil)
	publish("memmie.executions.7a2b3c4d-5e6f-4a0b-9c8d-7e6f5a4b3c2d.step.retry_scheduled", unknown("x2"), nil)

	dls := h.deadLetters(5)
	bySource := map[string][]*events.DeadLetter{}
	for _, dl := range dls {
		bySource[dl.Source] = append(bySource[dl.Source], dl)
	}
	require.Len(t, bySource["orchestrator"], 3)
	orch := bySource["orchestrator"]
	slices.SortFunc(orch, func(a, b *events.DeadLetter) int { return int(a.Sequence) - int(b.Sequence) })
	assert.Equal(t, []byte("not json"), orch[0].Data)
	assert.Equal(t, []string{"t-1"}, orch[0].Headers["X-Trace"], "the original headers are kept")
	assert.Equal(t, streams.Inbox, orch[0].Stream)
	assert.Equal(t, events.InboxSubject(ghost), orch[0].Subject)
	assert.Contains(t, orch[0].Reason, "decode event envelope")
	assert.Contains(t, orch[1].Reason, "unknown execution "+ghost)
	assert.Contains(t, orch[2].Reason, "is not an execution input")
	for _, source := range []string{"runner", "timers"} {
		require.Len(t, bySource[source], 1, source)
		assert.Contains(t, bySource[source][0].Reason, "unknown event type", source)
		assert.Equal(t, streams.Executions, bySource[source][0].Stream)
	}

	// The consumers went on: a later execution runs.
	id := h.start("fine", nil)
	assert.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status)
}

// TestEarlyTimerIsHeld sends a timer.fired command before it is due, as a message schedule
// with its 1-second granularity may: the orchestrator holds it until it is due.
func TestEarlyTimerIsHeld(t *testing.T) {
	svc := newService(t, func(_ call, n int) (int, any) {
		if n == 0 {
			return 503, nil
		}
		return 200, map[string]any{}
	})
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: retry_once
steps:
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    retry: {max_attempts: 2, backoff_ms: 2000, jitter: 0}
`)
	id := h.start("retry_once", nil)
	s := h.wait(id, "waiting for its retry", func(s *execution.State) bool {
		return s.Steps[0].Status == execution.StepRetryScheduled
	})
	due := s.Steps[0].RetryAt
	fire := execution.Fire(id, events.TimerStepRetry, events.AttemptRef{Run: 1, StepID: "flaky", Attempt: 2}, due)
	require.NoError(t, inbox.Publish(testContext(t), h.js, fire))

	s = h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status)
	calls := svc.callTimes()
	require.Len(t, calls, 2)
	assert.False(t, calls[1].Before(due), "the early timer waited: retried %s, due %s", calls[1], due)
	fired := 0
	for _, ty := range h.types(id) {
		if ty == events.TypeTimerFired {
			fired++
		}
	}
	assert.Equal(t, 1, fired, "the timer fired twice but is recorded once")
}

// TestCutShortAppendIsCompleted records an input without the decisions taken on it, as a
// chained append cut short by a crash leaves it. The input's redelivery completes the chain.
func TestCutShortAppendIsCompleted(t *testing.T) {
	h := newHarness(t, nil, func(c *engine.Config) { c.Handlers.NoRunner = true })
	h.register(`
id: two_steps
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
  - id: after
    type: transform
    input_map: {got: $.steps.call.output.v}
`)
	id := h.start("two_steps", nil)
	s := h.wait(id, "calling", func(s *execution.State) bool { return s.Steps[0].Status == execution.StepScheduled })
	h.close()

	ctx := testContext(t)
	nc, err := nats.Connect(h.srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st := s.Steps[0]
	report := execution.Request{ExecutionID: id, AttemptRef: events.AttemptRef{Run: 1, StepID: "call", Attempt: st.Attempt},
		Request: *st.Request, Deadline: st.Deadline}.Report(events.Response{StatusCode: 200, Body: map[string]any{"v": 7.0}}, time.Now())
	data, err := events.Marshal(report)
	require.NoError(t, err)
	last, err := stream.LastBySubject(ctx, js, streams.Executions, events.ExecutionFilter(id))
	require.NoError(t, err)
	_, err = stream.Append(ctx, js, streams.Executions, []stream.Msg{{Subject: report.Subject, Data: data, ID: report.ID}},
		stream.Expect{FilterSubject: events.ExecutionFilter(id), LastSubjectSeq: last.Sequence})
	require.NoError(t, err)
	require.NoError(t, inbox.Publish(ctx, js, report))

	h.open()
	s = h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status)
	b, _ := json.Marshal(s.Output)
	assert.JSONEq(t, `{"v": 7, "got": 7}`, string(b))
	assert.Equal(t, []events.Type{
		events.TypeExecutionQueued, events.TypeExecutionStarted, events.TypeStepScheduled,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeStepSucceeded, events.TypeExecutionCompleted,
	}, h.types(id), "the report is recorded once, its decisions after it")
}

// TestLastDeliveryOfAnAttemptFailsIt hands an attempt back twice (a runner stopped in the
// middle of its call), so that its last delivery is reached: the attempt is dead-lettered and
// reported as timed out, and the execution does not wait for it.
func TestLastDeliveryOfAnAttemptFailsIt(t *testing.T) {
	svc := newService(t, func(c call, _ int) (int, any) {
		<-c.ctx.Done() // never answers: only a stop ends the call
		return 0, nil
	})
	h := newHarness(t, map[string]string{"svc": svc.URL}, func(c *engine.Config) { c.Runner.MaxDeliver = 2 })
	h.stopTimeout = 200 * time.Millisecond
	h.register(`
id: stuck
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
`)
	id := h.start("stuck", nil)
	svc.waitCalls(t, 1)
	h.close() // the call is cancelled and handed back: delivery 1 of 2
	h.open()  // delivery 2 is the last: not called, given up

	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	require.NotNil(t, s.Steps[0].Error)
	assert.Equal(t, events.ErrorTimeout, s.Steps[0].Error.Kind)
	assert.Contains(t, s.Steps[0].Error.Message, "the runner gave up on the attempt")
	assert.Len(t, svc.Calls(), 1, "the last delivery makes no call")
	dls := h.deadLetters(1)
	require.Len(t, dls, 1)
	assert.Equal(t, "runner", dls[0].Source)
	assert.Equal(t, "memmie.executions."+id+".step.scheduled", dls[0].Subject)
	assert.Contains(t, dls[0].Reason, "no report after 2 deliveries")
}

// TestConflictReloadsAndDecidesAgain appends to an execution behind the orchestrator's back,
// as a second writer would: the orchestrator's next append conflicts, and it decides again on
// the history as it is.
func TestConflictReloadsAndDecidesAgain(t *testing.T) {
	release := make(chan struct{})
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/a": func(c call, _ int) (int, any) {
			select {
			case <-release:
			case <-c.ctx.Done():
				return 0, nil
			}
			return 200, map[string]any{}
		},
		"/b": reply(200, map[string]any{}),
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: two_calls
steps:
  - {id: a, type: api_call, service: svc, endpoint: /a}
  - {id: b, type: api_call, service: svc, endpoint: /b}
`)
	id := h.start("two_calls", nil)
	svc.waitCalls(t, 1) // the orchestrator's cache holds the execution at step.scheduled

	ctx := testContext(t)
	cancel := events.NewExecution(&events.CancelRequested{ExecutionID: id, Run: 1, Reason: "by another writer"}, events.SourceAPI, time.Now())
	data, err := events.Marshal(cancel)
	require.NoError(t, err)
	last, err := stream.LastBySubject(ctx, h.js, streams.Executions, events.ExecutionFilter(id))
	require.NoError(t, err)
	_, err = stream.Append(ctx, h.js, streams.Executions, []stream.Msg{{Subject: cancel.Subject, Data: data, ID: cancel.ID}},
		stream.Expect{FilterSubject: events.ExecutionFilter(id), LastSubjectSeq: last.Sequence})
	require.NoError(t, err)
	close(release)

	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCancelled, s.Status)
	assert.Equal(t, "by another writer", s.CancelReason)
	assert.Equal(t, []string{"POST /a"}, svc.paths(), "b is never scheduled")
	assert.Equal(t, []events.Type{
		events.TypeExecutionQueued, events.TypeExecutionStarted, events.TypeStepScheduled, events.TypeCancelRequested,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeExecutionCompensating, events.TypeExecutionCancelled,
	}, h.types(id))
}
