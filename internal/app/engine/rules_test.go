package engine_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
)

// Each rule of the core, through the real runtime: embedded JetStream, the handlers, and an
// httptest service.

func TestRetryThenSuccess(t *testing.T) {
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/flaky": func(_ call, n int) (int, any) {
			if n == 0 {
				return 503, map[string]any{"error": "busy"}
			}
			return 200, map[string]any{"ok": true}
		},
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: retry_then_success
steps:
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    input_map: {n: $.input.n}
    retry: {max_attempts: 3, backoff_ms: 200, jitter: 0}
`)
	id := h.start("retry_then_success", map[string]any{"n": 7})
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status)
	assert.Equal(t, map[string]any{"ok": true}, s.Output)
	assert.Equal(t, 2, s.Steps[0].Attempt)

	calls := svc.Calls()
	require.Len(t, calls, 2)
	for i, c := range calls {
		assert.Equal(t, "POST /flaky", c.Method+" "+c.Path)
		assert.Equal(t, map[string]any{"n": 7.0}, c.Body)
		assert.Equal(t, id+"/flaky", c.Headers["Idempotency-Key"], "every attempt sends the step's key")
		assert.Equal(t, []string{"1", "2"}[i], c.Headers["X-Memmie-Attempt"])
	}
	assert.Equal(t, []events.Type{
		events.TypeExecutionQueued, events.TypeExecutionStarted,
		events.TypeStepScheduled, events.TypeStepReported, events.TypeStepRetryScheduled,
		events.TypeTimerFired, events.TypeStepScheduled, events.TypeStepReported, events.TypeStepSucceeded,
		events.TypeExecutionCompleted,
	}, h.types(id))
}

func TestRetriesExhaustedCompensateInReverse(t *testing.T) {
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/reserve":      reply(200, map[string]any{"reservation": "r1"}),
		"/charge":       reply(200, map[string]any{"charge": "c1"}),
		"/ship":         reply(500, map[string]any{"error": "warehouse down"}),
		"/charge/undo":  reply(200, map[string]any{}),
		"/reserve/undo": reply(200, map[string]any{}),
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: saga
steps:
  - id: reserve
    type: api_call
    service: svc
    endpoint: /reserve
    compensation: {service: svc, endpoint: /reserve/undo, input_map: {reservation: $.steps.reserve.output.reservation}}
  - id: charge
    type: api_call
    service: svc
    endpoint: /charge
    compensation: {service: svc, endpoint: /charge/undo, input_map: {charge: $.steps.charge.output.charge}}
  - id: ship
    type: api_call
    service: svc
    endpoint: /ship
    retry: {max_attempts: 2, backoff_ms: 100, jitter: 0}
`)
	id := h.start("saga", map[string]any{})
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	require.NotNil(t, s.Error)
	assert.Equal(t, events.CodeStepFailed, s.Error.Code)
	assert.Equal(t, "ship", s.Error.StepID)
	assert.True(t, s.Retryable, "a 500 is transient")
	assert.False(t, s.CompensationFailed)

	assert.Equal(t, []string{
		"POST /reserve", "POST /charge", "POST /ship", "POST /ship",
		"POST /charge/undo", "POST /reserve/undo",
	}, svc.paths())
	calls := svc.Calls()
	assert.Equal(t, map[string]any{"charge": "c1"}, calls[4].Body)
	assert.Equal(t, id+"/charge/compensate", calls[4].Headers["Idempotency-Key"])
	assert.Equal(t, map[string]any{"reservation": "r1"}, calls[5].Body)
	assert.Equal(t, id+"/reserve/compensate", calls[5].Headers["Idempotency-Key"])
	for _, st := range s.Steps[:2] {
		require.NotNil(t, st.Compensation, st.ID)
		assert.Equal(t, execution.StepSucceeded, st.Compensation.Status, st.ID)
	}
}

func TestOnFailureContinue(t *testing.T) {
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/optional": reply(400, map[string]any{"error": "not today"}),
		"/required": reply(200, map[string]any{"done": true}),
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: continue_on_failure
steps:
  - id: optional
    type: api_call
    service: svc
    endpoint: /optional
    on_failure: continue
  - id: required
    type: api_call
    service: svc
    endpoint: /required
`)
	id := h.start("continue_on_failure", nil)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status)
	assert.Equal(t, map[string]any{"done": true}, s.Output)
	assert.Equal(t, execution.StepFailed, s.Steps[0].Status)
	require.NotNil(t, s.Steps[0].Error)
	assert.Equal(t, 400, s.Steps[0].Error.StatusCode)
	assert.Equal(t, execution.StepSucceeded, s.Steps[1].Status)
	assert.Equal(t, []string{"POST /optional", "POST /required"}, svc.paths())
}

func TestAttemptTimeoutAgainstHangingService(t *testing.T) {
	svc := newService(t, func(c call, _ int) (int, any) {
		<-c.ctx.Done() // hang until the caller gives up
		return 0, nil
	})
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: hangs
steps:
  - id: slow
    type: api_call
    service: svc
    endpoint: /slow
    timeout_seconds: 1
`)
	id := h.start("hangs", nil)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	require.NotNil(t, s.Steps[0].Error)
	assert.Equal(t, events.ErrorTimeout, s.Steps[0].Error.Kind)
	assert.Len(t, svc.Calls(), 1)
	assert.Less(t, s.EndedAt.Sub(s.StartedAt).Seconds(), 5.0, "the attempt ends at its 1 s timeout")
}

func TestClientErrorIsNotRetried(t *testing.T) {
	svc := newService(t, reply(422, map[string]any{"error": "bad blob"}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: rejects
steps:
  - id: check
    type: api_call
    service: svc
    endpoint: /check
    retry: {max_attempts: 3, backoff_ms: 50}
`)
	id := h.start("rejects", nil)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	assert.False(t, s.Retryable)
	require.NotNil(t, s.Steps[0].Error)
	assert.Equal(t, events.ErrorHTTP, s.Steps[0].Error.Kind)
	assert.Equal(t, 422, s.Steps[0].Error.StatusCode)
	assert.Len(t, svc.Calls(), 1, "a 4xx is final")
}

func TestUnknownServiceFailsTheStep(t *testing.T) {
	h := newHarness(t, nil)
	h.register(`
id: nowhere
steps:
  - id: call
    type: api_call
    service: missing
    endpoint: /x
    retry: {max_attempts: 3, backoff_ms: 50}
`)
	id := h.start("nowhere", nil)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	require.NotNil(t, s.Steps[0].Error)
	assert.Equal(t, events.ErrorUnknownService, s.Steps[0].Error.Kind)
	assert.Contains(t, s.Steps[0].Error.Message, `"missing"`)
	assert.Equal(t, 1, s.Steps[0].Attempt, "an unknown service is not retried")
}

func TestInvalidInputCallsNoService(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: name_input
type: input
definition:
  type: object
  required: [name]
  properties:
    name: {type: string}
`, `
id: needs_name
input_schema_id: name_input
steps:
  - id: hello
    type: api_call
    service: svc
    endpoint: /hello
`)
	// Start refuses it and appends nothing. (An input that breaks a schema pinned by a
	// queued event fails the run at start: the core's tests cover that.)
	ctx := testContext(t)
	_, _, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "needs_name", Input: []byte(`{"nom": "x"}`), IdempotencyKey: "bad-input"})
	require.ErrorIs(t, err, engine.ErrInvalidInput)
	var inErr *engine.InputError
	require.ErrorAs(t, err, &inErr)
	assert.Equal(t, "name_input", inErr.SchemaID)
	assert.Equal(t, []string{"/: missing property 'name'"}, inErr.Problems)
	_, err = h.eng.History(ctx, engine.IDForKey("bad-input"))
	assert.ErrorIs(t, err, engine.ErrNotFound, "nothing was appended")
	assert.Empty(t, svc.Calls())

	id := h.start("needs_name", map[string]any{"name": "x"})
	assert.Equal(t, execution.StatusCompleted, h.waitEnd(id).Status)
}

func TestFalseConditionSkipsTheStep(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: conditional
steps:
  - id: maybe
    type: api_call
    service: svc
    endpoint: /maybe
    condition: $.input.go == true
  - id: always
    type: transform
    input_map: {done: true, skipped: $.steps.maybe.status}
`)
	id := h.start("conditional", map[string]any{"go": false})
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status)
	assert.Equal(t, execution.StepSkipped, s.Steps[0].Status)
	assert.Equal(t, map[string]any{"done": true, "skipped": "skipped"}, s.Output)
	assert.Empty(t, svc.Calls())
}

func TestCancelCompensatesWhatSucceeded(t *testing.T) {
	release := make(chan struct{})
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/first": reply(200, map[string]any{"id": "f"}),
		"/second": func(c call, _ int) (int, any) {
			select {
			case <-release:
			case <-c.ctx.Done():
			}
			return 200, map[string]any{"id": "s"}
		},
		"/third":       reply(200, map[string]any{}),
		"/second/undo": reply(200, map[string]any{}),
		"/first/undo":  reply(200, map[string]any{}),
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: cancellable
steps:
  - id: first
    type: api_call
    service: svc
    endpoint: /first
    compensation: {service: svc, endpoint: /first/undo}
  - id: second
    type: api_call
    service: svc
    endpoint: /second
    compensation: {service: svc, endpoint: /second/undo}
  - id: third
    type: api_call
    service: svc
    endpoint: /third
`)
	id := h.start("cancellable", nil)
	svc.waitCalls(t, 2) // /second is in flight
	require.NoError(t, h.eng.Cancel(testContext(t), id, "changed my mind"))
	h.wait(id, "cancel requested", func(s *execution.State) bool { return s.CancelRequested })
	close(release)

	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCancelled, s.Status)
	assert.Equal(t, "changed my mind", s.CancelReason)
	assert.Equal(t, []string{"POST /first", "POST /second", "POST /second/undo", "POST /first/undo"}, svc.paths())

	err := h.eng.Cancel(testContext(t), id, "again")
	assert.ErrorIs(t, err, engine.ErrState, "an ended execution cannot be cancelled")
}

func TestCancelWhileQueued(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	svc := newService(t, func(c call, _ int) (int, any) {
		select {
		case <-release:
		case <-c.ctx.Done():
		}
		return 200, map[string]any{}
	})
	h := newHarness(t, map[string]string{"svc": svc.URL}, withMaxRunning(1))
	h.register(`
id: one_call
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
`)
	busy := h.start("one_call", nil)
	svc.waitCalls(t, 1)
	queued := h.start("one_call", nil)
	require.NoError(t, h.eng.Cancel(testContext(t), queued, ""))
	s := h.waitEnd(queued)
	assert.Equal(t, execution.StatusCancelled, s.Status)
	assert.Equal(t, []events.Type{events.TypeExecutionQueued, events.TypeCancelRequested, events.TypeExecutionCancelled}, h.types(queued))
	assert.Equal(t, execution.StatusRunning, h.waitStatus(busy, execution.StatusRunning).Status)
}

func TestRetryFromTheFailedStep(t *testing.T) {
	svc := newService(t, routes(map[string]func(call, int) (int, any){
		"/a": reply(200, map[string]any{"v": "a"}),
		"/b": func(_ call, n int) (int, any) {
			if n == 0 {
				return 409, map[string]any{"error": "not yet"}
			}
			return 200, map[string]any{"v": "b"}
		},
	}))
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: retryable
steps:
  - id: a
    type: api_call
    service: svc
    endpoint: /a
  - id: b
    type: api_call
    service: svc
    endpoint: /b
  - id: c
    type: transform
    input_map: {a: $.steps.a.output.v, b: $.steps.b.output.v}
`)
	id := h.start("retryable", nil)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusFailed, s.Status)
	assert.ErrorIs(t, h.eng.Cancel(testContext(t), id, ""), engine.ErrState)

	require.NoError(t, h.eng.Retry(testContext(t), id))
	s = h.wait(id, "completed in run 2", func(s *execution.State) bool { return s.Run == 2 && s.Status.Terminal() })
	require.Equal(t, execution.StatusCompleted, s.Status)
	assert.Equal(t, map[string]any{"v": "b", "a": "a", "b": "b"}, s.Output, "the merge of the outputs, later wins")
	assert.Equal(t, []string{"POST /a", "POST /b", "POST /b"}, svc.paths(), "a keeps its result; b runs again")
	assert.ErrorIs(t, h.eng.Retry(testContext(t), id), engine.ErrState, "only a failed execution is retried")
}

func TestStartIsIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	h.register(`
id: noop
steps:
  - id: t
    type: transform
    input_map: {x: $.input.x}
`)
	ctx := testContext(t)
	first, created, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "noop", Input: []byte(`{"x": 1}`), IdempotencyKey: "order-42"})
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, engine.IDForKey("order-42"), first)
	again, created, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "noop", Input: []byte(` { "x" : 1.0 } `), IdempotencyKey: "order-42"})
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, first, again)
	// The same key with other parameters is a conflict, naming what differs.
	_, _, err = h.eng.Start(ctx, engine.StartRequest{WorkflowID: "noop", Input: []byte(`{"x": 2}`), Priority: 3, IdempotencyKey: "order-42"})
	var conflict *engine.IdempotencyConflictError
	require.ErrorAs(t, err, &conflict)
	assert.ErrorIs(t, err, engine.ErrIdempotencyConflict)
	assert.Equal(t, []string{"input", "priority"}, conflict.Fields)
	s := h.waitEnd(first)
	assert.Equal(t, map[string]any{"x": 1.0}, s.Output, "the first request's input")

	_, _, err = h.eng.Start(ctx, engine.StartRequest{WorkflowID: "nope"})
	assert.ErrorIs(t, err, engine.ErrWorkflowNotFound)
	_, _, err = h.eng.Start(ctx, engine.StartRequest{WorkflowID: "noop", Priority: 101})
	assert.ErrorIs(t, err, engine.ErrInvalid)
	_, _, err = h.eng.Start(ctx, engine.StartRequest{WorkflowID: "noop", Input: []byte(`{`)})
	assert.ErrorIs(t, err, engine.ErrInvalid)
	_, err = h.eng.Execution(ctx, "no-such-execution")
	assert.ErrorIs(t, err, engine.ErrNotFound)
	_, err = h.eng.Execution(ctx, "not.a.token")
	assert.ErrorIs(t, err, engine.ErrNotFound)
}
