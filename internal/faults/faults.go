// Package faults names the points where tests inject faults into the handlers: a crash of
// the process between two steps of its work. A handler calls its Hook at each point; when the
// hook returns an error, the handler abandons the work in hand at once — no ack, no nak, no
// further publish — as a process that died there would. What the test does before returning
// (typically closing the process's NATS connection without draining) makes the rest of the
// process fail the same way.
//
//	cfg.Hooks = func(ctx context.Context, at faults.Point, executionID string) error {
//		if at == faults.RunnerCalled {
//			nc.Close() // the process dies after the call, before its report
//			return faults.ErrCrash
//		}
//		return nil
//	}
//
// A nil Hook costs one comparison. Production code never sets one.
package faults

import (
	"context"
	"errors"
)

// Point names where a handler is in its work.
type Point string

// The crash points. Each sits between two effects whose order matters for recovery.
const (
	// OrchestratorDecided: the orchestrator decided on a command, and has not appended.
	OrchestratorDecided Point = "orchestrator.decided"
	// OrchestratorAppended: the command and its decisions are appended; the command is not
	// acknowledged.
	OrchestratorAppended Point = "orchestrator.appended"
	// RunnerCalled: the runner made the HTTP call and has not reported it.
	RunnerCalled Point = "runner.called"
	// RunnerReported: the report is on the inbox, or recorded by the orchestrator in the
	// process; the scheduled attempt is not acknowledged.
	RunnerReported Point = "runner.reported"
	// TimersSet: the timer is scheduled or fired; the event that asked for it is not
	// acknowledged.
	TimersSet Point = "timers.set"
	// DispatcherAdmitted: the dispatcher admitted an execution (it counts as running) and
	// has not sent its start.
	DispatcherAdmitted Point = "dispatcher.admitted"
	// BlobsAppended: a blob event's delta is appended; its trigger request is not, and the
	// event is not acknowledged. The hook gets the blob id.
	BlobsAppended Point = "blobs.appended"
)

// The crash points of the writer of executions' deltas (handlers/blobs, outputs.go).
const (
	// BlobsOutputDeltaAppended: a completed execution's next delta is on its blob, and at
	// least one more of its deltas is not.
	BlobsOutputDeltaAppended Point = "blobs.output.delta_appended"
	// BlobsOutputDeltasAppended: all the execution's deltas are on its blob; the created
	// events of the blobs it derived are not published, and the completed event is not
	// acknowledged.
	BlobsOutputDeltasAppended Point = "blobs.output.deltas_appended"
)

// Points lists every crash point.
var Points = []Point{OrchestratorDecided, OrchestratorAppended, RunnerCalled, RunnerReported, TimersSet, DispatcherAdmitted,
	BlobsAppended, BlobsOutputDeltaAppended, BlobsOutputDeltasAppended}

// ErrCrash is what a hook returns to make the handler abandon its work.
var ErrCrash = errors.New("crash injected")

// Hook is called at each point with the execution concerned. A non-nil error makes the
// handler abandon the work in hand.
type Hook func(ctx context.Context, at Point, executionID string) error

// At calls the hook, if any.
func (h Hook) At(ctx context.Context, at Point, executionID string) error {
	if h == nil {
		return nil
	}
	return h(ctx, at, executionID)
}
