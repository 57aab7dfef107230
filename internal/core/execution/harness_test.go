package execution_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

const execID = "7b0e4f5c-3a1d-4c2e-9f6a-000000000001"

var t0 = time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)

// run drives one execution the way the runtime does: for each input, Apply, Decide, then apply
// the decisions. Every event goes through Marshal and Decode first, as it would through the
// stream.
type run struct {
	t       testing.TB
	s       execution.State
	now     time.Time
	history []events.Event
	// last is the input fed last; decided the decisions it led to.
	last    events.Event
	decided []events.Event
	// log records every input with its now and decisions, for golden histories.
	log []logged
}

type logged struct {
	now       time.Time
	in        events.Event
	decisions []events.Event
}

// queueOpt changes the queued event of a test execution.
type queueOpt func(t testing.TB, q *events.ExecutionQueued)

func withInput(v any) queueOpt {
	return func(_ testing.TB, q *events.ExecutionQueued) { q.Input = jsonData(v) }
}

func withMaxRetries(n int) queueOpt {
	return func(_ testing.TB, q *events.ExecutionQueued) { q.MaxRetries = n }
}

func withSchemas(inYAML, outYAML string) queueOpt {
	return func(t testing.TB, q *events.ExecutionQueued) {
		q.InputSchema = canonicalSchema(t, inYAML)
		q.OutputSchema = canonicalSchema(t, outYAML)
	}
}

func canonicalSchema(t testing.TB, src string) json.RawMessage {
	if src == "" {
		return nil
	}
	sc, err := definitions.ParseSchema("schema.yaml", []byte(src))
	require.NoError(t, err)
	b, err := definitions.Canonical(sc)
	require.NoError(t, err)
	return b
}

// queued builds the queued event of a workflow given in YAML.
func queued(t testing.TB, workflowYAML string, opts ...queueOpt) events.Event {
	t.Helper()
	wf, err := definitions.ParseWorkflow("workflow.yaml", []byte(workflowYAML))
	require.NoError(t, err)
	b, err := definitions.Canonical(wf)
	require.NoError(t, err)
	q := &events.ExecutionQueued{
		ExecutionID:      execID,
		WorkflowID:       wf.ID,
		WorkflowRevision: 3,
		Workflow:         b,
		Input:            map[string]any{},
		ProviderID:       "book-writer",
		Seed:             42,
	}
	for _, o := range opts {
		o(t, q)
	}
	return events.NewExecution(q, events.SourceAPI, t0)
}

func newRun(t testing.TB, workflowYAML string, opts ...queueOpt) *run {
	t.Helper()
	r := &run{t: t, now: t0}
	r.feed(queued(t, workflowYAML, opts...))
	require.Empty(t, r.decided, "nothing follows a queued event until the dispatcher starts it")
	return r
}

// roundTrip passes an event through its stored form.
func roundTrip(t testing.TB, ev events.Event) events.Event {
	t.Helper()
	b, err := events.Marshal(ev)
	require.NoError(t, err)
	got, err := events.Decode(b)
	require.NoError(t, err)
	return got
}

// feed appends an input: Apply, Decide, and apply the decisions.
func (r *run) feed(in events.Event) []events.Event {
	r.t.Helper()
	in = roundTrip(r.t, in)
	require.NoError(r.t, r.s.Apply(in))
	r.history = append(r.history, in)
	out, err := execution.Decide(r.s, in, r.now)
	require.NoError(r.t, err)

	again, err := execution.Decide(r.s, in, r.now)
	require.NoError(r.t, err)
	require.Equal(r.t, marshalAll(r.t, out), marshalAll(r.t, again), "decide is deterministic")

	r.last, r.decided = in, nil
	for _, ev := range out {
		ev = roundTrip(r.t, ev)
		require.NoError(r.t, r.s.Apply(ev))
		r.history = append(r.history, ev)
		r.decided = append(r.decided, ev)
	}
	after, err := execution.Decide(r.s, in, r.now)
	require.NoError(r.t, err)
	require.Empty(r.t, after, "deciding again once the decisions are applied decides nothing")
	r.log = append(r.log, logged{now: r.now, in: in, decisions: r.decided})
	return r.decided
}

func marshalAll(t testing.TB, evs []events.Event) []string {
	out := []string{}
	for _, ev := range evs {
		b, err := events.Marshal(ev)
		require.NoError(t, err)
		out = append(out, string(b))
	}
	return out
}

func (r *run) tick() { r.now = r.now.Add(time.Second) }

// input builds an input from the state; the table tests list them.
type input func(r *run) events.Event

func start() input {
	return func(r *run) events.Event {
		r.tick()
		ev, ok := execution.Start(&r.s, r.now)
		require.True(r.t, ok, "a run waits to start")
		return ev
	}
}

// request returns the attempt in flight of a step or of its compensation.
func (r *run) request(stepID string, compensation bool) execution.Request {
	r.t.Helper()
	for _, req := range r.s.Pending().Requests {
		if req.StepID == stepID && req.Compensation == compensation {
			return req
		}
	}
	r.t.Fatalf("no request of %s (compensation %v) in flight; pending: %+v", stepID, compensation, r.s.Pending())
	return execution.Request{}
}

func respond(stepID string, compensation bool, resp events.Response) input {
	return func(r *run) events.Event {
		r.tick()
		return r.request(stepID, compensation).Report(resp, r.now)
	}
}

// reply reports an HTTP answer to a step's attempt in flight.
func reply(stepID string, status int, body any) input {
	resp := events.Response{StatusCode: status, Body: jsonData(body), DurationMS: 5}
	if status < 200 || status > 299 {
		resp.ErrorKind, resp.Error = events.ErrorHTTP, fmt.Sprintf("HTTP %d", status)
	}
	return respond(stepID, false, resp)
}

func ok(stepID string, body any) input { return reply(stepID, 200, body) }

// replyRetryAfter reports an answer with a Retry-After header.
func replyRetryAfter(stepID string, status int, after time.Duration) input {
	return respond(stepID, false, events.Response{StatusCode: status, ErrorKind: events.ErrorHTTP,
		Error: fmt.Sprintf("HTTP %d", status), RetryAfterMS: after.Milliseconds()})
}

func networkError(stepID string) input {
	return respond(stepID, false, events.Response{ErrorKind: events.ErrorNetwork, Error: "connection refused"})
}

func compReply(stepID string, status int) input {
	resp := events.Response{StatusCode: status, Body: map[string]any{"undone": true}}
	if status < 200 || status > 299 {
		resp.ErrorKind, resp.Error, resp.Body = events.ErrorHTTP, fmt.Sprintf("HTTP %d", status), nil
	}
	return respond(stepID, true, resp)
}

// lateReply reports an answer for a given attempt of the current run, in flight or not.
func lateReply(stepID string, attempt, status int, body any) input {
	return func(r *run) events.Event {
		r.tick()
		return events.NewExecution(&events.StepReported{ExecutionID: execID,
			AttemptRef: events.AttemptRef{Run: r.s.Run, StepID: stepID, Attempt: attempt},
			Response:   events.Response{StatusCode: status, Body: jsonData(body)}}, events.SourceRunner, r.now)
	}
}

// fire fires the pending timer of a kind (for step timers, the one of stepID) at its due time.
// An attempt's timeout is the timeout of the request in flight, which no timer is set for
// any more: it comes from a timer an older version set, or from the reconciler.
func fire(kind events.TimerKind, stepID string) input {
	return func(r *run) events.Event {
		r.t.Helper()
		p := r.s.Pending()
		timers := p.Timers
		for _, req := range p.Requests {
			if tm, ok := req.Timeout(); ok {
				timers = append(timers, tm)
			}
		}
		for _, tm := range timers {
			d := tm.Fire.Data.(*events.TimerFired)
			if d.Kind == kind && d.StepID == stepID {
				r.now = tm.At
				return tm.Fire
			}
		}
		r.t.Fatalf("no pending %s timer of %q; pending: %+v", kind, stepID, r.s.Pending().Timers)
		return events.Event{}
	}
}

// staleTimer fires a timer for a given attempt, pending or not.
func staleTimer(kind events.TimerKind, stepID string, attempt int) input {
	return func(r *run) events.Event {
		r.tick()
		return execution.Fire(execID, kind, events.AttemptRef{Run: r.s.Run, StepID: stepID, Attempt: attempt}, r.now)
	}
}

func cancel() input {
	return func(r *run) events.Event {
		r.tick()
		return events.NewExecution(&events.CancelRequested{ExecutionID: execID, Run: r.s.Run, Reason: "user asked"},
			events.SourceAPI, r.now)
	}
}

func retry() input {
	return func(r *run) events.Event {
		r.tick()
		return events.NewExecution(&events.RetryRequested{ExecutionID: execID, Run: r.s.Run}, events.SourceAPI, r.now)
	}
}

// again feeds the last input once more, as a redelivery would.
func again() input { return func(r *run) events.Event { return r.last } }

// jsonData turns Go values into JSON data as encoding/json decodes it.
func jsonData(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func types(evs []events.Event) []events.Type {
	out := []events.Type{}
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// find returns the data of the events of one type in the history, in order.
func find[T events.ExecutionData](r *run) []T {
	var out []T
	for _, ev := range r.history {
		if d, ok := ev.Data.(T); ok {
			out = append(out, d)
		}
	}
	return out
}

// Short names of the decisions, for the tables.
const (
	stepScheduled = events.TypeStepScheduled
	stepSucceeded = events.TypeStepSucceeded
	stepFailed    = events.TypeStepFailed
	stepRetry     = events.TypeStepRetryScheduled
	stepSkipped   = events.TypeStepSkipped
	compScheduled = events.TypeCompensationScheduled
	compSucceeded = events.TypeCompensationSucceeded
	compFailed    = events.TypeCompensationFailed
	compRetry     = events.TypeCompensationRetryScheduled
	compensating  = events.TypeExecutionCompensating
	completed     = events.TypeExecutionCompleted
	failed        = events.TypeExecutionFailed
	cancelled     = events.TypeExecutionCancelled
	retryLater    = events.TypeExecutionRetryScheduled
	requeued      = events.TypeExecutionRequeued
)

// nothing is the decisions of an input that leads to none.
var nothing = []events.Type{}
