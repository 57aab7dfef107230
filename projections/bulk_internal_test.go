package projections

import (
	"slices"
	"testing"

	"github.com/memmie/memmie/events"
)

// The replay passes over, undecoded, the execution events a projection does not fold (typed):
// each execution event type is either folded or known to leave the projection's rows alone,
// so that a new type fails here until someone decides which.
func TestFoldsClassifiesEveryExecutionType(t *testing.T) {
	lifecycle := []events.Type{events.TypeExecutionQueued, events.TypeExecutionStarted, events.TypeExecutionCompensating,
		events.TypeExecutionCompleted, events.TypeExecutionFailed, events.TypeExecutionRetryScheduled,
		events.TypeExecutionCancelled, events.TypeExecutionRequeued}
	steps := []events.Type{events.TypeStepScheduled, events.TypeStepReported, events.TypeStepSucceeded,
		events.TypeStepFailed, events.TypeStepRetryScheduled, events.TypeStepSkipped, events.TypeCompensationScheduled,
		events.TypeCompensationReported, events.TypeCompensationSucceeded, events.TypeCompensationFailed,
		events.TypeCompensationRetryScheduled}
	// Inputs that no projection here folds into a row.
	ignored := []events.Type{events.TypeTimerFired, events.TypeCancelRequested, events.TypeRetryRequested}
	known := map[events.Type]bool{}
	for _, ts := range [][]events.Type{lifecycle, steps, ignored, {events.TypeDeltasRejected}} {
		for _, t := range ts {
			known[t] = true
		}
	}
	for _, typ := range events.Types() {
		if typ.IsExecution() && !known[typ] {
			t.Errorf("%s: new execution event type: add it to the folds of the projections that fold it, and here", typ)
		}
	}
	for typ := range known {
		if got, want := (&Executions{}).folds(typ), slices.Contains(lifecycle, typ) || typ == events.TypeDeltasRejected; got != want {
			t.Errorf("executions folds %s: %v, want %v", typ, got, want)
		}
		if got, want := (&Queued{}).folds(typ), slices.Contains(lifecycle, typ) && typ != events.TypeExecutionCompensating; got != want {
			t.Errorf("queued_executions folds %s: %v, want %v", typ, got, want)
		}
		if got, want := (&Steps{}).folds(typ), slices.Contains(steps, typ); got != want {
			t.Errorf("execution_steps folds %s: %v, want %v", typ, got, want)
		}
	}
}

func TestSkipper(t *testing.T) {
	subject := func(ty events.Type) string {
		s, err := events.ExecutionSubject("0b6f3c8e-4a51-5f7e-9c2d-1a2b3c4d5e6f", ty)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		p       Projection
		subject string
		skip    bool
	}{
		{&Executions{}, subject(events.TypeStepSucceeded), true},
		{&Executions{}, subject(events.TypeTimerFired), true},
		{&Executions{}, subject(events.TypeExecutionCompleted), false},
		{&Executions{}, "memmie.executions.x.garbage", false},
		{&Executions{}, "memmie.executions.step.succeeded", false},
		{&Executions{}, "memmie.other.x.step.succeeded", false},
		{&Steps{}, subject(events.TypeStepSucceeded), false},
		{&Steps{}, subject(events.TypeExecutionQueued), true},
		{&Queued{}, subject(events.TypeExecutionCompensating), true},
		{struct{ Projection }{&Executions{}}, subject(events.TypeStepSucceeded), false}, // no typed: decode all
	} {
		if got := skipper(tc.p)(tc.subject); got != tc.skip {
			t.Errorf("%T %s: skip %v, want %v", tc.p, tc.subject, got, tc.skip)
		}
	}
}

func TestReplayFilter(t *testing.T) {
	for _, tc := range []struct {
		p    Projection
		want string
	}{
		{&Executions{}, "memmie.executions.*.*"},
		{&Queued{}, "memmie.executions.*.*"},
		{&Steps{}, "memmie.executions.*.*.*"},
		{struct{ Projection }{&Executions{}}, ""}, // no typed: the whole stream
		{mixed{}, ""}, // tails of one and two tokens: the whole stream
	} {
		if got := replayFilter(tc.p); got != tc.want {
			t.Errorf("%T: filter %q, want %q", tc.p, got, tc.want)
		}
	}
}

// mixed folds execution.completed and step.succeeded.
type mixed struct{ Projection }

func (mixed) folds(t events.Type) bool {
	return t == events.TypeExecutionCompleted || t == events.TypeStepSucceeded
}
