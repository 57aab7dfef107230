package execution_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// simWorkflow has a bit of everything: retries, a transform, a condition, on_failure: continue
// and compensations.
const simWorkflow = `
id: sim
timeout_seconds: 120
steps:
  - id: a
    type: api_call
    service: svc
    endpoint: /a
    retry: {max_attempts: 3, backoff_ms: 10}
    compensation: {service: svc, endpoint: "/a/{id}", method: DELETE, input_map: {id: $.steps.a.output.id}}
  - id: t
    type: transform
    input_map: {from_a: $.steps.a.output.id}
  - id: b
    type: api_call
    service: svc
    endpoint: /b
    condition: "$.input.skip_b != true"
    on_failure: continue
    retry: {max_attempts: 2, backoff_ms: 10}
  - id: c
    type: api_call
    service: svc
    endpoint: /c
    timeout_seconds: 5
    retry: {max_attempts: 2, backoff_ms: 10}
    compensation: {service: svc, endpoint: /c/undo}
  - id: d
    type: api_call
    service: svc
    endpoint: /d
`

// simulate plays a runtime that delivers reports and timers in random order, redelivers old
// inputs, reports attempts that are long gone, and cancels or retries at random moments.
func simulate(t testing.TB, seed uint64) *run {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r := newRun(t, simWorkflow,
		withInput(map[string]any{"skip_b": rng.IntN(3) == 0}),
		withMaxRetries(rng.IntN(2)))
	var delivered []events.Event
	quiet := 0 // inputs since the execution ended
	for step := 0; step < 400 && quiet < 6; step++ {
		r.now = r.now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		cands := candidates(r, rng, delivered)
		if len(cands) == 0 {
			break
		}
		ev := cands[rng.IntN(len(cands))]
		r.feed(ev)
		delivered = append(delivered, ev)
		if r.s.Status.Terminal() {
			quiet++
		}
	}
	return r
}

func candidates(r *run, rng *rand.Rand, delivered []events.Event) []events.Event {
	var out []events.Event
	p := r.s.Pending()
	if p.Dispatch {
		ev, ok := execution.Start(&r.s, r.now)
		require.True(r.t, ok)
		out = append(out, ev, ev) // the dispatcher is eager
	}
	for _, req := range p.Requests {
		out = append(out, req.Report(randomResponse(rng), r.now))
		// An attempt's timeout timer (an older version's, or the reconciler's) is rarer than
		// a report, as it is in life.
		if tm, ok := req.Timeout(); ok && rng.IntN(6) == 0 {
			out = append(out, tm.Fire)
		}
	}
	for _, tm := range p.Timers {
		// The deadline is rarer than reports, as it is in life.
		kind := tm.Fire.Data.(*events.TimerFired).Kind
		if kind != events.TimerExecutionDeadline || rng.IntN(6) == 0 {
			out = append(out, tm.Fire)
		}
	}
	if len(delivered) > 0 && rng.IntN(3) == 0 {
		out = append(out, delivered[rng.IntN(len(delivered))]) // a redelivery
	}
	if rng.IntN(4) == 0 { // a report of any attempt, current or not
		steps := []string{"a", "b", "c", "d", "nope"}
		ref := events.AttemptRef{Run: 1 + rng.IntN(r.s.Run+1), StepID: steps[rng.IntN(len(steps))], Attempt: 1 + rng.IntN(3)}
		out = append(out, execution.Request{ExecutionID: execID, Compensation: rng.IntN(2) == 0, AttemptRef: ref}.
			Report(randomResponse(rng), r.now))
	}
	if rng.IntN(4) == 0 { // a timer of any attempt
		kinds := []events.TimerKind{events.TimerStepRetry, events.TimerStepTimeout, events.TimerCompensationRetry,
			events.TimerCompensationTimeout, events.TimerExecutionDeadline, events.TimerExecutionRetry}
		ref := events.AttemptRef{Run: 1 + rng.IntN(r.s.Run+1), StepID: []string{"a", "c", "d"}[rng.IntN(3)], Attempt: 1 + rng.IntN(3)}
		if ref.Run == r.s.Run && rng.IntN(2) == 0 {
			ref.Run-- // mostly timers of past runs: a current deadline is a real one
		}
		out = append(out, execution.Fire(execID, kinds[rng.IntN(len(kinds))], ref, r.now))
	}
	if rng.IntN(25) == 0 {
		out = append(out, cancel()(r))
	}
	if r.s.Status == execution.StatusFailed && rng.IntN(3) == 0 {
		out = append(out, retry()(r))
	}
	return out
}

func randomResponse(rng *rand.Rand) events.Response {
	switch rng.IntN(12) {
	case 0:
		return events.Response{StatusCode: 500, ErrorKind: events.ErrorHTTP, Error: "HTTP 500"}
	case 1:
		return events.Response{StatusCode: 429, ErrorKind: events.ErrorHTTP, Error: "HTTP 429", RetryAfterMS: int64(rng.IntN(5000))}
	case 2:
		return events.Response{ErrorKind: events.ErrorNetwork, Error: "connection reset"}
	case 3:
		if rng.IntN(3) == 0 {
			return events.Response{StatusCode: 400, ErrorKind: events.ErrorHTTP, Error: "HTTP 400"}
		}
		return events.Response{StatusCode: 200, Body: nil}
	default:
		return events.Response{StatusCode: 200, Body: map[string]any{"id": fmt.Sprintf("x%d", rng.IntN(100))}}
	}
}

// checkInvariants checks a simulated history.
func checkInvariants(t testing.TB, r *run) {
	t.Helper()
	results := map[string]string{}
	ends := map[int]int{}
	ids := map[string]bool{}
	attempts := map[string]int{}
	maxAttempts := map[string]int{"a": 3, "b": 2, "c": 2, "d": 1}
	var lastCompensated = map[int]int{} // run -> index of the last step compensated
	order := map[string]int{"a": 0, "t": 1, "b": 2, "c": 3, "d": 4}
	for _, ev := range r.history {
		if !ev.Type.IsInput() {
			require.False(t, ids[ev.ID], "decision %s (%s) taken twice", ev.ID, ev.Type)
			ids[ev.ID] = true
		}
		switch d := ev.Data.(type) {
		case *events.StepSucceeded, *events.StepFailed, *events.StepRetryScheduled, *events.StepSkipped,
			*events.CompensationSucceeded, *events.CompensationFailed, *events.CompensationRetryScheduled:
			key := resultKey(d)
			require.Empty(t, results[key], "two results for %s: %s and %s", key, results[key], ev.Type)
			results[key] = string(ev.Type)
		case *events.ExecutionCompleted, *events.ExecutionFailed, *events.ExecutionCancelled, *events.ExecutionRetryScheduled:
			run := runOf(d)
			ends[run]++
			require.Equal(t, 1, ends[run], "run %d ended twice", run)
		case *events.StepScheduled:
			key := fmt.Sprintf("%d/%s", d.Run, d.StepID)
			attempts[key]++
			require.Equal(t, attempts[key], d.Attempt, "attempts of %s count up from 1", key)
			require.LessOrEqual(t, d.Attempt, maxAttempts[d.StepID], "%s makes at most max_attempts calls", key)
		case *events.CompensationScheduled:
			if d.Attempt == 1 {
				i := order[d.StepID]
				if last, ok := lastCompensated[d.Run]; ok {
					require.Less(t, i, last, "compensations run in reverse order")
				}
				lastCompensated[d.Run] = i
			}
		}
	}

	// Fold is deterministic, and the stored form folds to the same state.
	folded, err := execution.Fold(r.history)
	require.NoError(t, err)
	again, err := execution.Fold(r.history)
	require.NoError(t, err)
	stored := make([]events.Event, len(r.history))
	for i, ev := range r.history {
		stored[i] = roundTrip(t, ev)
	}
	fromStore, err := execution.Fold(stored)
	require.NoError(t, err)
	want := stateJSON(t, r.s)
	assert.Equal(t, want, stateJSON(t, folded), "fold equals the state built one event at a time")
	assert.Equal(t, want, stateJSON(t, again))
	assert.Equal(t, want, stateJSON(t, fromStore))

	// An ended execution waits for nothing.
	if r.s.Status == execution.StatusCompleted || r.s.Status == execution.StatusCancelled {
		p := r.s.Pending()
		assert.Empty(t, p.Requests)
		assert.Empty(t, p.Timers)
		assert.False(t, p.Dispatch)
	}
}

func resultKey(d events.Data) string {
	switch d := d.(type) {
	case *events.StepSucceeded:
		return fmt.Sprintf("step/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	case *events.StepFailed:
		return fmt.Sprintf("step/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	case *events.StepRetryScheduled:
		return fmt.Sprintf("step/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	case *events.StepSkipped:
		return fmt.Sprintf("step/%d/%s/0", d.Run, d.StepID)
	case *events.CompensationSucceeded:
		return fmt.Sprintf("comp/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	case *events.CompensationFailed:
		return fmt.Sprintf("comp/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	case *events.CompensationRetryScheduled:
		return fmt.Sprintf("comp/%d/%s/%d", d.Run, d.StepID, d.Attempt)
	}
	panic(fmt.Sprintf("not a result: %T", d))
}

func runOf(d events.Data) int {
	switch d := d.(type) {
	case *events.ExecutionCompleted:
		return d.Run
	case *events.ExecutionFailed:
		return d.Run
	case *events.ExecutionCancelled:
		return d.Run
	case *events.ExecutionRetryScheduled:
		return d.Run
	}
	panic(fmt.Sprintf("not an end: %T", d))
}

func TestRandomInterleavings(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 50
	}
	statuses := map[execution.Status]int{}
	for seed := range uint64(seeds) {
		r := simulate(t, seed)
		checkInvariants(t, r)
		statuses[r.s.Status]++
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
	// The simulation reaches every end, so the invariants were checked on each.
	for _, s := range []execution.Status{execution.StatusCompleted, execution.StatusFailed, execution.StatusCancelled} {
		assert.Positive(t, statuses[s], "no simulation ended %s: %v", s, statuses)
	}
	t.Logf("ends: %v", statuses)
}

func TestSimulationIsReproducible(t *testing.T) {
	a, b := simulate(t, 7), simulate(t, 7)
	assert.Equal(t, marshalAll(t, a.history), marshalAll(t, b.history), "same inputs, same decisions, byte for byte")
}

func FuzzInterleavings(f *testing.F) {
	for _, seed := range []uint64{0, 1, 2, 3, 42, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		checkInvariants(t, simulate(t, seed))
	})
}
