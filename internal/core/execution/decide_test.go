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

// threeSteps loads a blob, expands it and saves the result; expand and save can be undone.
const threeSteps = `
id: expand_chapter
provider_id: book-writer
name: Expand a chapter
steps:
  - id: load
    type: api_call
    service: studio
    endpoint: /blobs/{blob_id}
    method: GET
    input_map:
      blob_id: $.input.blob_id
    output_map:
      content: $.content
    variables: [content]
  - id: expand
    type: api_call
    service: core
    endpoint: /generate
    input_map:
      prompt: "Expand: {$.vars.content}"
    compensation:
      service: core
      endpoint: /generate/{request_id}
      method: DELETE
      input_map:
        request_id: $.steps.expand.output.request_id
  - id: save
    type: api_call
    service: studio
    endpoint: /blobs
    input_map:
      parent_id: $.input.blob_id
      text: $.steps.expand.output.text
      by: $.execution.id
    compensation:
      service: studio
      endpoint: /blobs/{id}
      method: DELETE
      input_map:
        id: $.steps.save.output.id
`

// saga has four steps; a and c can be undone, b cannot, d is the one that fails.
const saga = `
id: saga
steps:
  - id: a
    type: api_call
    service: svc
    endpoint: /a
    compensation: {service: svc, endpoint: "/a/{id}", method: DELETE, input_map: {id: $.steps.a.output.id}}
  - id: b
    type: api_call
    service: svc
    endpoint: /b
  - id: c
    type: api_call
    service: svc
    endpoint: /c
    retry: {max_attempts: 2, backoff_ms: 100, jitter: 0}
    compensation: {service: svc, endpoint: "/c/{id}", method: DELETE, input_map: {id: $.steps.c.output.id}}
  - id: d
    type: api_call
    service: svc
    endpoint: /d
`

func withRetry(maxAttempts int) string {
	return `
id: flaky
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /call
    timeout_seconds: 10
    retry: {max_attempts: ` + itoa(maxAttempts) + `, backoff_ms: 1000, multiplier: 2, max_backoff_ms: 3000, jitter: 0}
`
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

type move struct {
	in   input
	want []events.Type
}

type ruleCase struct {
	name     string
	workflow string
	opts     []queueOpt
	moves    []move
	check    func(t *testing.T, r *run)
}

func TestDecideRules(t *testing.T) {
	blob := withInput(map[string]any{"blob_id": "b1"})
	cases := []ruleCase{
		{
			name:     "steps run in order and pass data along",
			workflow: threeSteps,
			opts:     []queueOpt{blob},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("load", map[string]any{"content": "once", "ignored": 1}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("expand", map[string]any{"text": "once upon a time", "request_id": "r1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("save", map[string]any{"id": "b2"}), []events.Type{stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				reqs := find[*events.StepScheduled](r)
				require.Len(t, reqs, 3)
				assert.Equal(t, events.Request{Service: "studio", Method: "GET", Path: "/blobs/b1",
					Body: map[string]any{"blob_id": "b1"}, TimeoutMS: 30_000, IdempotencyKey: execID + "/load"}, reqs[0].Request)
				assert.Equal(t, map[string]any{"prompt": "Expand: once"}, reqs[1].Request.Body, "$.vars")
				assert.Equal(t, "POST", reqs[1].Request.Method, "the default method")
				assert.Equal(t, map[string]any{"parent_id": "b1", "text": "once upon a time", "by": execID}, reqs[2].Request.Body)
				assert.Equal(t, execID+"/save", reqs[2].Request.IdempotencyKey)
				assert.Equal(t, map[string]any{"content": "once"}, r.s.Steps[0].Output, "output_map applied to the body")
				assert.Equal(t, map[string]any{"content": "once", "text": "once upon a time", "request_id": "r1", "id": "b2"},
					r.s.Output, "without an output_map, the merge of the outputs")
				assert.Equal(t, execution.StatusCompleted, r.s.Status)
				assert.Empty(t, r.s.Pending().Timers)
			},
		},
		{
			name: "a false condition skips the step",
			workflow: `
id: conditional
steps:
  - {id: check, type: api_call, service: svc, endpoint: /check}
  - {id: maybe, type: api_call, service: svc, endpoint: /maybe, condition: "$.steps.check.output.go == true"}
  - {id: last, type: transform, input_map: {maybe: $.steps.maybe.status}}
`,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("check", map[string]any{"go": false}), []events.Type{stepSucceeded, stepSkipped, stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				skipped := find[*events.StepSkipped](r)
				require.Len(t, skipped, 1)
				assert.Equal(t, "maybe", skipped[0].StepID)
				assert.Contains(t, skipped[0].Reason, "condition is false")
				assert.Equal(t, map[string]any{"maybe": "skipped"}, r.s.Steps[2].Output, "$.steps.<id>.status")
				assert.Len(t, find[*events.StepScheduled](r), 1, "the skipped step made no call")
			},
		},
		{
			name: "transforms run within one decision and read the whole scope",
			workflow: `
id: scoped
name: Scoped
provider_id: wf-provider
steps:
  - id: first
    type: transform
    input_map: {n: $.input.n, word: hello}
    variables: [word]
  - id: never
    type: transform
    condition: "$.input.n > 100"
    input_map: {x: 1}
  - id: second
    type: transform
    input_map:
      execution: $.execution.id
      provider: $.provider_id
      workflow: $.workflow
      greeting: "{$.vars.word}, {$.input.name}"
      first_status: $.steps.first.status
      n: $.steps.first.output.n
`,
			opts: []queueOpt{withInput(map[string]any{"n": 7, "name": "Ada"})},
			moves: []move{
				{start(), []events.Type{stepSucceeded, stepSkipped, stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, map[string]any{
					"execution":    execID,
					"provider":     "book-writer",
					"workflow":     map[string]any{"id": "scoped", "name": "Scoped", "provider_id": "wf-provider", "revision": 3.0},
					"greeting":     "hello, Ada",
					"first_status": "succeeded",
					"n":            7.0,
				}, r.s.Steps[2].Output)
				assert.Equal(t, map[string]any{"n": 7.0, "word": "hello", "execution": execID, "provider": "book-writer",
					"workflow": map[string]any{"id": "scoped", "name": "Scoped", "provider_id": "wf-provider", "revision": 3.0},
					"greeting": "hello, Ada", "first_status": "succeeded"}, r.s.Output, "later outputs win the merge")
			},
		},
		{
			name: "the workflow output_map builds the output",
			workflow: `
id: mapped
steps:
  - {id: load, type: api_call, service: svc, endpoint: /load, variables: [size]}
output_map:
  text: $.steps.load.output.text
  size: $.vars.size
  label: "{$.input.label}!"
`,
			opts: []queueOpt{withInput(map[string]any{"label": "done"})},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("load", map[string]any{"text": "t", "size": 3, "extra": true}), []events.Type{stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, map[string]any{"text": "t", "size": 3.0, "label": "done!"}, r.s.Output)
			},
		},
		{
			name:     "an invalid input fails before the first step",
			workflow: threeSteps,
			opts: []queueOpt{withInput(map[string]any{"blob_id": 7}), withSchemas(`
id: in
definition: {type: object, required: [blob_id, user_id], properties: {blob_id: {type: string}}}
`, "")},
			moves: []move{
				{start(), []events.Type{failed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Empty(t, find[*events.StepScheduled](r), "no step ran")
				require.NotNil(t, r.s.Error)
				assert.Equal(t, events.CodeInputInvalid, r.s.Error.Code)
				details := r.s.Error.Details.(map[string]any)
				assert.Len(t, details["problems"], 2, "every problem is listed: %v", details["problems"])
				assert.Equal(t, execution.StatusFailed, r.s.Status)
			},
		},
		{
			name:     "an invalid output is compensated, then fails",
			workflow: threeSteps,
			opts: []queueOpt{blob, withSchemas("", `
id: out
definition: {type: object, required: [summary]}
`)},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("load", map[string]any{"content": "c"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("expand", map[string]any{"text": "t", "request_id": "r1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("save", map[string]any{"id": "b2"}), []events.Type{stepSucceeded, compensating, compScheduled}},
				{compReply("save", 200), []events.Type{compSucceeded, compScheduled}},
				{compReply("expand", 204), []events.Type{compSucceeded, failed}},
			},
			check: func(t *testing.T, r *run) {
				require.NotNil(t, r.s.Error)
				assert.Equal(t, events.CodeOutputInvalid, r.s.Error.Code)
				assert.Contains(t, r.s.Error.Message, "summary")
				assert.Nil(t, r.s.Output)
				assert.False(t, r.s.Retryable)
			},
		},
		{
			name:     "retries make exactly max_attempts calls with capped exponential backoff",
			workflow: withRetry(4),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{reply("call", 502, nil), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{networkError("call"), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{reply("call", 503, nil), []events.Type{stepFailed, compensating, failed}},
			},
			check: func(t *testing.T, r *run) {
				scheduled := find[*events.StepScheduled](r)
				require.Len(t, scheduled, 4, "exactly max_attempts calls")
				for i, s := range scheduled {
					assert.Equal(t, i+1, s.Attempt)
					assert.Equal(t, execID+"/call", s.Request.IdempotencyKey, "every attempt of a step shares its key")
				}
				var delays []int64
				for _, rs := range find[*events.StepRetryScheduled](r) {
					delays = append(delays, rs.DelayMS)
				}
				assert.Equal(t, []int64{1000, 2000, 3000}, delays, "×2 each time, capped at 3000")
				f := find[*events.StepFailed](r)[0]
				assert.Equal(t, 4, f.Attempt)
				assert.True(t, f.Retryable)
				assert.Equal(t, events.CodeStepFailed, r.s.Error.Code)
				assert.Equal(t, "call", r.s.Error.StepID)
				assert.True(t, r.s.Retryable)
			},
		},
		{
			name:     "Retry-After is honoured for 429 and 503, up to a cap",
			workflow: withRetry(5),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{replyRetryAfter("call", 429, 7*time.Second), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{replyRetryAfter("call", 503, 500*time.Millisecond), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{replyRetryAfter("call", 500, 9*time.Second), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{replyRetryAfter("call", 429, 2*time.Hour), []events.Type{stepRetry}},
			},
			check: func(t *testing.T, r *run) {
				var delays []int64
				for _, rs := range find[*events.StepRetryScheduled](r) {
					delays = append(delays, rs.DelayMS)
					assert.True(t, rs.DueAt.Equal(r.history[0].Time.Add(0)) || rs.DueAt.After(r.history[0].Time))
				}
				assert.Equal(t, []int64{
					7000,                                   // Retry-After beats the 1000 ms backoff
					2000,                                   // the 2000 ms backoff beats a shorter Retry-After
					3000,                                   // a 500 does not honour Retry-After
					execution.MaxRetryAfter.Milliseconds(), // capped
				}, delays)
			},
		},
		{
			name:     "a 4xx fails the step at once",
			workflow: withRetry(3),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 422, map[string]any{"error": "bad prompt"}), []events.Type{stepFailed, compensating, failed}},
			},
			check: func(t *testing.T, r *run) {
				f := find[*events.StepFailed](r)[0]
				assert.Equal(t, events.StepError{Kind: events.ErrorHTTP, Message: "HTTP 422", StatusCode: 422}, f.Error)
				assert.False(t, f.Retryable)
				assert.Len(t, find[*events.StepScheduled](r), 1)
			},
		},
		{
			name:     "408 and 429 are retried",
			workflow: withRetry(3),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 408, nil), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{reply("call", 429, nil), []events.Type{stepRetry}},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{ok("call", "fine"), []events.Type{stepSucceeded, completed}},
			},
		},
		{
			name:     "a step timeout is a retryable failure and the late report is stale",
			workflow: withRetry(2),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{fire(events.TimerStepTimeout, "call"), []events.Type{stepRetry}},
				{lateReply("call", 1, 200, "too late"), nothing},
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{ok("call", "in time"), []events.Type{stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				first := find[*events.StepScheduled](r)[0]
				assert.Equal(t, int64(10_000), first.Request.TimeoutMS)
				assert.True(t, first.Deadline.Equal(r.history[1].Time.Add(10*time.Second)), "the attempt's deadline")
				rs := find[*events.StepRetryScheduled](r)[0]
				assert.Equal(t, events.ErrorTimeout, rs.Error.Kind)
				assert.Equal(t, 1, r.s.StaleCount)
				assert.Equal(t, events.TypeStepReported, r.s.Stale[0].Type)
				assert.Equal(t, map[string]any{}, r.s.Output, "a string output is not merged")
			},
		},
		{
			name: "the execution deadline fails the run after the step in flight and the compensations",
			workflow: `
id: slow
timeout_seconds: 60
steps:
  - {id: a, type: api_call, service: svc, endpoint: /a, compensation: {service: svc, endpoint: /a/undo}}
  - {id: b, type: api_call, service: svc, endpoint: /b, compensation: {service: svc, endpoint: /b/undo}}
  - {id: c, type: api_call, service: svc, endpoint: /c}
`,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", nil), []events.Type{stepSucceeded, stepScheduled}},
				{fire(events.TimerExecutionDeadline, ""), nothing},
				{ok("b", nil), []events.Type{stepSucceeded, compensating, compScheduled}},
				{compReply("b", 200), []events.Type{compSucceeded, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, failed}},
			},
			check: func(t *testing.T, r *run) {
				started := find[*events.ExecutionStarted](r)[0]
				assert.True(t, started.Deadline.Equal(r.history[1].Time.Add(time.Minute)))
				assert.Equal(t, events.CodeDeadlineExceeded, r.s.Error.Code)
				assert.False(t, r.s.Retryable)
				undone := find[*events.CompensationScheduled](r)
				assert.Equal(t, []string{"b", "a"}, []string{undone[0].StepID, undone[1].StepID})
				assert.Equal(t, execID+"/b/compensate", undone[0].Request.IdempotencyKey)
			},
		},
		{
			name:     "the execution deadline ends a step that waits for a retry",
			workflow: withRetry(3),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepRetry}},
				{fire(events.TimerExecutionDeadline, ""), []events.Type{compensating, failed}},
				{staleTimer(events.TimerStepRetry, "call", 2), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, events.CodeDeadlineExceeded, r.s.Error.Code)
				assert.Equal(t, 1, r.s.StaleCount, "the retry timer came after the end")
				assert.Equal(t, execution.StepFailed, r.s.Steps[0].Status)
				assert.True(t, r.s.Steps[0].Stopped)
				assert.Equal(t, events.ErrorHTTP, r.s.Steps[0].Error.Kind, "it keeps its last error")
				assert.Len(t, find[*events.StepFailed](r), 0, "the attempt has its result already: retry_scheduled")
			},
		},
		{
			name: "on_failure continue records the failure and runs the next step",
			workflow: `
id: tolerant
steps:
  - {id: optional, type: api_call, service: svc, endpoint: /opt, on_failure: continue}
  - {id: fallback, type: transform, condition: '$.steps.optional.status == "failed"', input_map: {used: fallback}}
`,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("optional", 404, nil), []events.Type{stepFailed, stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, execution.StepFailed, r.s.Steps[0].Status)
				assert.Equal(t, map[string]any{"used": "fallback"}, r.s.Output, "only succeeded steps are merged")
				assert.Nil(t, r.s.Error)
			},
		},
		{
			name:     "compensations run in reverse order, one at a time, only for steps that succeeded",
			workflow: saga,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("b", map[string]any{"id": "b1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("c", map[string]any{"id": "c1"}), []events.Type{stepSucceeded, stepScheduled}},
				{reply("d", 400, nil), []events.Type{stepFailed, compensating, compScheduled}},
				{compReply("c", 200), []events.Type{compSucceeded, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, failed}},
			},
			check: func(t *testing.T, r *run) {
				undone := find[*events.CompensationScheduled](r)
				require.Len(t, undone, 2, "b has no compensation, d did not succeed")
				assert.Equal(t, "c", undone[0].StepID)
				assert.Equal(t, events.Request{Service: "svc", Method: "DELETE", Path: "/c/c1", Body: map[string]any{"id": "c1"},
					TimeoutMS: 30_000, IdempotencyKey: execID + "/c/compensate"}, undone[0].Request)
				assert.Equal(t, "/a/a1", undone[1].Request.Path)
				assert.Equal(t, &events.ExecutionError{Code: events.CodeStepFailed, StepID: "d", Message: "step d failed: HTTP 400"}, r.s.Error)
				assert.False(t, r.s.CompensationFailed)
				assert.Equal(t, execution.StepSucceeded, r.s.Steps[0].Compensation.Status)
			},
		},
		{
			name:     "a compensation is retried, and when it fails the earlier ones still run",
			workflow: saga,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("b", nil), []events.Type{stepSucceeded, stepScheduled}},
				{ok("c", map[string]any{"id": "c1"}), []events.Type{stepSucceeded, stepScheduled}},
				{networkError("d"), []events.Type{stepFailed, compensating, compScheduled}},
				{compReply("c", 500), []events.Type{compRetry}},
				{fire(events.TimerCompensationRetry, "c"), []events.Type{compScheduled}},
				{compReply("c", 500), []events.Type{compFailed, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, failed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Len(t, find[*events.CompensationScheduled](r), 3, "c twice (its step's max_attempts), then a")
				f := find[*events.ExecutionFailed](r)[0]
				assert.True(t, f.CompensationFailed)
				assert.True(t, f.Retryable, "d's network error was transient")
				assert.Equal(t, execution.StepFailed, r.s.Steps[2].Compensation.Status)
			},
		},
		{
			name:     "a compensation that times out is retried",
			workflow: saga,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("b", nil), []events.Type{stepSucceeded, stepScheduled}},
				{ok("c", map[string]any{"id": "c1"}), []events.Type{stepSucceeded, stepScheduled}},
				{reply("d", 400, nil), []events.Type{stepFailed, compensating, compScheduled}},
				{fire(events.TimerCompensationTimeout, "c"), []events.Type{compRetry}},
				{fire(events.TimerCompensationRetry, "c"), []events.Type{compScheduled}},
				{compReply("c", 200), []events.Type{compSucceeded, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, failed}},
			},
		},
		{
			name:     "cancel of a queued execution cancels it at once",
			workflow: threeSteps,
			moves: []move{
				{cancel(), []events.Type{cancelled}},
				{func(r *run) events.Event {
					_, ok := execution.Start(&r.s, r.now)
					assert.False(t, ok, "nothing to start")
					return events.NewExecution(&events.ExecutionStarted{ExecutionID: execID, Run: 1}, events.SourceDispatcher, r.now)
				}, nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, execution.StatusCancelled, r.s.Status)
				assert.Equal(t, 1, r.s.StaleCount, "a start that raced the cancel")
				assert.False(t, r.s.Pending().Dispatch)
			},
		},
		{
			name:     "cancel during a step waits for it and compensates its late success",
			workflow: threeSteps,
			opts:     []queueOpt{blob},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("load", map[string]any{"content": "c"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("expand", map[string]any{"text": "t", "request_id": "r1"}), []events.Type{stepSucceeded, stepScheduled}},
				{cancel(), nothing},
				{ok("save", map[string]any{"id": "b2"}), []events.Type{stepSucceeded, compensating, compScheduled}},
				{compReply("save", 200), []events.Type{compSucceeded, compScheduled}},
				{compReply("expand", 200), []events.Type{compSucceeded, cancelled}},
			},
			check: func(t *testing.T, r *run) {
				undone := find[*events.CompensationScheduled](r)
				assert.Equal(t, "/blobs/b2", undone[0].Request.Path, "the late success is undone")
				assert.Equal(t, "/generate/r1", undone[1].Request.Path)
				assert.Equal(t, execution.StatusCancelled, r.s.Status)
				assert.Equal(t, "user asked", find[*events.ExecutionCancelled](r)[0].Reason)
				assert.Nil(t, r.s.Error)
			},
		},
		{
			name:     "cancel during a retry wait ends the step",
			workflow: withRetry(3),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepRetry}},
				{cancel(), []events.Type{compensating, cancelled}},
				{staleTimer(events.TimerStepRetry, "call", 2), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, execution.StepFailed, r.s.Steps[0].Status)
				assert.True(t, r.s.Steps[0].Stopped)
				assert.Empty(t, r.s.Pending().Timers)
			},
		},
		{
			name:     "cancel of an ended execution changes nothing",
			workflow: withRetry(1),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("call", nil), []events.Type{stepSucceeded, completed}},
				{cancel(), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, execution.StatusCompleted, r.s.Status)
				assert.Equal(t, 1, r.s.StaleCount)
			},
		},
		{
			name:     "a manual retry restarts at the failed step and redoes what was compensated",
			workflow: saga,
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a1"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("b", map[string]any{"id": "b1"}), []events.Type{stepSucceeded, stepScheduled}},
				{reply("c", 400, nil), []events.Type{stepFailed, compensating, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, failed}},
				{retry(), []events.Type{requeued}},
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a2"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("c", map[string]any{"id": "c2"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("d", nil), []events.Type{stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, 2, r.s.Run)
				var run2 []string
				for _, s := range find[*events.StepScheduled](r) {
					if s.Run == 2 {
						run2 = append(run2, s.StepID+" "+s.Request.IdempotencyKey)
					}
				}
				assert.Equal(t, []string{
					"a " + execID + "/a/2", // compensated, so it runs again, under a new key
					"c " + execID + "/c",   // the failed step, same logical call
					"d " + execID + "/d",
				}, run2, "b's result is reused")
				assert.Equal(t, 1, r.s.Steps[1].Run, "b's result is from run 1")
				assert.Equal(t, map[string]any{"id": "b1"}, r.s.Steps[1].Output)
				assert.True(t, find[*events.ExecutionRequeued](r)[0].Manual)
				assert.Equal(t, 0, r.s.RetryCount, "a manual retry is not an automatic one")
			},
		},
		{
			name:     "a retry of an execution that did not fail changes nothing",
			workflow: withRetry(1),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{retry(), nothing},
				{ok("call", nil), []events.Type{stepSucceeded, completed}},
				{retry(), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, 2, r.s.StaleCount)
				assert.Equal(t, 1, r.s.Run)
			},
		},
		{
			name:     "a retryable failure gets an automatic re-run",
			workflow: saga,
			opts:     []queueOpt{withMaxRetries(2)},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a1"}), []events.Type{stepSucceeded, stepScheduled}},
				{reply("b", 503, nil), []events.Type{stepFailed, compensating, compScheduled}},
				{compReply("a", 200), []events.Type{compSucceeded, retryLater}},
				{fire(events.TimerExecutionRetry, ""), []events.Type{requeued}},
				{start(), []events.Type{stepScheduled}},
				{ok("a", map[string]any{"id": "a2"}), []events.Type{stepSucceeded, stepScheduled}},
				{ok("b", nil), []events.Type{stepSucceeded, stepScheduled}},
				{ok("c", nil), []events.Type{stepSucceeded, stepScheduled}},
				{ok("d", nil), []events.Type{stepSucceeded, completed}},
			},
			check: func(t *testing.T, r *run) {
				rs := find[*events.ExecutionRetryScheduled](r)[0]
				assert.Equal(t, 1, rs.RetryCount)
				assert.InDelta(t, execution.ExecutionRetryBackoff.Milliseconds(), rs.DelayMS, 0.2*float64(execution.ExecutionRetryBackoff.Milliseconds()))
				assert.Equal(t, 1, r.s.RetryCount)
				assert.Equal(t, 2, r.s.Run)
				assert.False(t, find[*events.ExecutionRequeued](r)[0].Manual)
			},
		},
		{
			name:     "automatic re-runs end when they are used up",
			workflow: withRetry(1),
			opts:     []queueOpt{withMaxRetries(1)},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepFailed, compensating, retryLater}},
				{fire(events.TimerExecutionRetry, ""), []events.Type{requeued}},
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepFailed, compensating, failed}},
			},
			check: func(t *testing.T, r *run) {
				assert.True(t, r.s.Retryable, "a manual retry may still help")
				assert.Equal(t, 1, r.s.RetryCount)
			},
		},
		{
			name:     "a failure that is not transient is not re-run",
			workflow: withRetry(1),
			opts:     []queueOpt{withMaxRetries(3)},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 400, nil), []events.Type{stepFailed, compensating, failed}},
			},
		},
		{
			name:     "cancel during an automatic retry wait cancels at once",
			workflow: withRetry(1),
			opts:     []queueOpt{withMaxRetries(1)},
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{reply("call", 500, nil), []events.Type{stepFailed, compensating, retryLater}},
				{cancel(), []events.Type{cancelled}},
				{staleTimer(events.TimerExecutionRetry, "", 0), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, 2, find[*events.ExecutionCancelled](r)[0].Run, "run 1 ended with retry_scheduled; run 2 never starts")
				assert.Equal(t, execution.StatusCancelled, r.s.Status)
				assert.False(t, r.s.Pending().Dispatch)
			},
		},
		{
			name:     "stale and duplicate inputs decide nothing",
			workflow: withRetry(3),
			moves: []move{
				{start(), []events.Type{stepScheduled}},
				{again(), nothing}, // the same start, redelivered
				{reply("call", 500, nil), []events.Type{stepRetry}},
				{again(), nothing},                                        // the same report, redelivered
				{lateReply("call", 1, 200, "late"), nothing},              // a report of an attempt that has a result
				{staleTimer(events.TimerStepTimeout, "call", 1), nothing}, // the timeout of that attempt
				{fire(events.TimerStepRetry, "call"), []events.Type{stepScheduled}},
				{again(), nothing},                             // the retry timer fired twice
				{lateReply("call", 3, 200, "future"), nothing}, // an attempt not made yet
				{ok("call", "done"), []events.Type{stepSucceeded, completed}},
				{again(), nothing},
				{staleTimer(events.TimerExecutionDeadline, "", 0), nothing},
			},
			check: func(t *testing.T, r *run) {
				assert.Equal(t, 8, r.s.StaleCount)
				assert.Len(t, r.s.Stale, 8)
				assert.Len(t, find[*events.ExecutionCompleted](r), 1, "one end per run")
				assert.Len(t, find[*events.StepRetryScheduled](r), 1, "one result per attempt")
			},
		},
		{
			name: "an input that cannot be resolved fails the step",
			workflow: `
id: unresolved
steps:
  - {id: get, type: api_call, service: svc, endpoint: "/blobs/{id}", input_map: {id: $.input.missing}}
`,
			moves: []move{
				{start(), []events.Type{stepFailed, compensating, failed}},
			},
			check: func(t *testing.T, r *run) {
				f := find[*events.StepFailed](r)[0]
				assert.Equal(t, events.ErrorInput, f.Error.Kind)
				assert.Contains(t, f.Error.Message, "id")
				assert.Equal(t, 0, f.Attempt, "no attempt was made")
			},
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
			if tc.check != nil {
				tc.check(t, r)
			}
			// Whatever the route, a fold of the history gives the state the run built.
			folded, err := execution.Fold(r.history)
			require.NoError(t, err)
			assert.Equal(t, stateJSON(t, r.s), stateJSON(t, folded))
		})
	}
}

func stateJSON(t testing.TB, s execution.State) string {
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return string(b)
}

func TestDefinitionThatDoesNotCompileFailsAtStart(t *testing.T) {
	r := &run{t: t, now: t0}
	r.feed(events.NewExecution(&events.ExecutionQueued{ExecutionID: execID, WorkflowID: "broken", WorkflowRevision: 1,
		Workflow: json.RawMessage(`{"id":"broken","steps":[{"id":"x","type":"teleport"}]}`)}, events.SourceAPI, t0))
	assert.Contains(t, r.s.DefinitionError, "teleport")
	require.Equal(t, []events.Type{failed}, types(r.feed(start()(r))))
	assert.Equal(t, events.CodeDefinitionInvalid, r.s.Error.Code)
}

func TestApplyRejectsInconsistentHistories(t *testing.T) {
	q := queued(t, withRetry(1))
	tests := []struct {
		name    string
		history []events.Event
		want    string
	}{
		{"no queued event first", []events.Event{events.NewExecution(&events.ExecutionStarted{ExecutionID: execID, Run: 1}, events.SourceDispatcher, t0)},
			"starts with memmie.execution.queued"},
		{"another execution's event", []events.Event{q, events.NewExecution(&events.CancelRequested{ExecutionID: "other"}, events.SourceAPI, t0)},
			`execution "other"`},
		{"a decision for another run", []events.Event{q, events.NewExecution(&events.ExecutionCompleted{ExecutionID: execID, Run: 2}, events.SourceCore, t0)},
			"run 2"},
		{"a decision that does not fit", []events.Event{q, events.NewExecution(&events.ExecutionCompleted{ExecutionID: execID, Run: 1}, events.SourceCore, t0)},
			"queued"},
		{"a decision for an unknown step", []events.Event{q, events.NewExecution(&events.StepSucceeded{ExecutionID: execID,
			AttemptRef: events.AttemptRef{Run: 1, StepID: "ghost"}}, events.SourceCore, t0)}, `no step "ghost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := execution.Fold(tt.history)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestPendingAfterFold(t *testing.T) {
	r := newRun(t, saga)
	assert.True(t, r.s.Pending().Dispatch)
	r.feed(start()(r))
	r.feed(ok("a", map[string]any{"id": "a1"})(r))

	s, err := execution.Fold(r.history)
	require.NoError(t, err)
	p := s.Pending()
	assert.False(t, p.Dispatch)
	require.Len(t, p.Requests, 1)
	assert.Equal(t, "b", p.Requests[0].StepID)
	assert.Equal(t, 1, p.Requests[0].Attempt)
	require.Len(t, p.Timers, 1, "the run's deadline; the attempt's is the runner's to enforce")
	deadline := p.Timers[0]
	assert.Equal(t, events.TimerExecutionDeadline, deadline.Fire.Data.(*events.TimerFired).Kind)
	assert.True(t, deadline.At.Equal(s.Deadline))
	timeout, ok := p.Requests[0].Timeout()
	require.True(t, ok)
	assert.Equal(t, events.TimerStepTimeout, timeout.Fire.Data.(*events.TimerFired).Kind)
	assert.True(t, timeout.At.Equal(p.Requests[0].Deadline))
	assert.Equal(t, "b", timeout.Fire.Data.(*events.TimerFired).StepID)
	assert.Equal(t, timeout.Fire.ID, execution.Fire(execID, events.TimerStepTimeout,
		events.AttemptRef{Run: 1, StepID: "b", Attempt: 1}, timeout.At).ID, "a timer set twice fires one event")

	// The report the runner builds from the pending request is what the core expects.
	r.feed(p.Requests[0].Report(events.Response{StatusCode: 500, ErrorKind: events.ErrorHTTP}, r.now))
	assert.Equal(t, []events.Type{stepFailed, compensating, compScheduled}, types(r.decided))
	p = r.s.Pending()
	require.Len(t, p.Requests, 1)
	assert.True(t, p.Requests[0].Compensation)
	assert.Equal(t, "a", p.Requests[0].StepID)
	assert.Empty(t, p.Timers, "no deadline while compensating, and no timer for the attempt")
	timeout, ok = p.Requests[0].Timeout()
	require.True(t, ok)
	assert.Equal(t, events.TimerCompensationTimeout, timeout.Fire.Data.(*events.TimerFired).Kind)
	assert.True(t, timeout.At.Equal(p.Requests[0].Deadline))
}

func TestStateJSONView(t *testing.T) {
	r := newRun(t, threeSteps, withInput(map[string]any{"blob_id": "b1"}))
	r.feed(start()(r))
	r.feed(ok("load", map[string]any{"content": "c"})(r))
	r.feed(reply("expand", 500, nil)(r))

	var view map[string]any
	require.NoError(t, json.Unmarshal([]byte(stateJSON(t, r.s)), &view))
	assert.Equal(t, "failed", view["status"])
	assert.Equal(t, execID, view["execution_id"])
	steps := view["steps"].([]any)
	require.Len(t, steps, 3)
	load := steps[0].(map[string]any)
	assert.Equal(t, "succeeded", load["status"])
	assert.EqualValues(t, 1, load["attempts"])
	assert.Equal(t, map[string]any{"content": "c"}, load["output"])
	expand := steps[1].(map[string]any)
	assert.Equal(t, "failed", expand["status"])
	assert.Equal(t, "HTTP 500", expand["error"].(map[string]any)["message"])
	assert.Equal(t, "pending", steps[2].(map[string]any)["status"])
	assert.Equal(t, "step_failed", view["error"].(map[string]any)["code"])
}

func TestStateRecordsTheTrigger(t *testing.T) {
	r := newRun(t, threeSteps, withInput(map[string]any{"blob_id": "b1"}), func(_ testing.TB, q *events.ExecutionQueued) {
		q.BlobID, q.SourceEventID, q.BaseVersion, q.Trigger = "b1", "e1", 3, "workflows[0].triggers[1]"
	})
	assert.Equal(t, "b1", r.s.BlobID)
	assert.Equal(t, "e1", r.s.SourceEventID)
	assert.Equal(t, int64(3), r.s.BaseVersion)
	assert.Equal(t, "workflows[0].triggers[1]", r.s.Trigger)
}
