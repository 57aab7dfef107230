package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// registry holds every type this build reads and writes: its current data schema version, its
// payload and the upcasters from each older version. Raise a version, and add an upcaster from
// the previous one, whenever a payload's shape changes.
var registry = map[Type]*registration{}

func register(t Type, version int, execution bool, newData func() Data, upcast map[int]Upcaster) {
	if _, dup := registry[t]; dup {
		panic("events: type registered twice: " + string(t))
	}
	for v := 1; v < version; v++ {
		if upcast[v] == nil {
			panic(fmt.Sprintf("events: %s has no upcaster from version %d", t, v))
		}
	}
	registry[t] = &registration{version: version, execution: execution, new: newData, upcast: upcast}
}

func init() {
	exec := func(t Type, newData func() Data) { register(t, 1, true, newData, nil) }
	exec(TypeExecutionQueued, func() Data { return new(ExecutionQueued) })
	exec(TypeExecutionStarted, func() Data { return new(ExecutionStarted) })
	exec(TypeStepScheduled, func() Data { return new(StepScheduled) })
	exec(TypeStepSucceeded, func() Data { return new(StepSucceeded) })
	exec(TypeStepFailed, func() Data { return new(StepFailed) })
	exec(TypeStepRetryScheduled, func() Data { return new(StepRetryScheduled) })
	exec(TypeStepSkipped, func() Data { return new(StepSkipped) })
	exec(TypeCompensationScheduled, func() Data { return new(CompensationScheduled) })
	exec(TypeCompensationSucceeded, func() Data { return new(CompensationSucceeded) })
	exec(TypeCompensationFailed, func() Data { return new(CompensationFailed) })
	exec(TypeCompensationRetryScheduled, func() Data { return new(CompensationRetryScheduled) })
	exec(TypeTimerFired, func() Data { return new(TimerFired) })
	exec(TypeExecutionCompensating, func() Data { return new(ExecutionCompensating) })
	exec(TypeExecutionCompleted, func() Data { return new(ExecutionCompleted) })
	exec(TypeExecutionFailed, func() Data { return new(ExecutionFailed) })
	exec(TypeCancelRequested, func() Data { return new(CancelRequested) })
	exec(TypeExecutionCancelled, func() Data { return new(ExecutionCancelled) })
	exec(TypeRetryRequested, func() Data { return new(RetryRequested) })
	exec(TypeExecutionRetryScheduled, func() Data { return new(ExecutionRetryScheduled) })
	exec(TypeExecutionRequeued, func() Data { return new(ExecutionRequeued) })
	exec(TypeDeltasRejected, func() Data { return new(DeltasRejected) })

	// Reports are at version 2; see upcastReportV1.
	reports := map[int]Upcaster{1: upcastReportV1}
	register(TypeStepReported, 2, true, func() Data { return new(StepReported) }, reports)
	register(TypeCompensationReported, 2, true, func() Data { return new(CompensationReported) }, reports)

	register(TypeBlobCreated, 1, false, func() Data { return &BlobEvent{Kind: BlobCreated} }, nil)
	register(TypeBlobUpdated, 1, false, func() Data { return &BlobEvent{Kind: BlobUpdated} }, nil)
	register(TypeBlobDeleted, 1, false, func() Data { return &BlobEvent{Kind: BlobDeleted} }, nil)
	register(TypeDelta, 1, false, func() Data { return new(Delta) }, nil)
	register(TypeDefinitionRegistered, 1, false, func() Data { return new(DefinitionRegistered) }, nil)
	register(TypeDefinitionDeactivated, 1, false, func() Data { return new(DefinitionDeactivated) }, nil)
	register(TypeDeadLetter, 1, false, func() Data { return new(DeadLetter) }, nil)
	register(TypeDeadLetterRedriven, 1, false, func() Data { return new(DeadLetterRedriven) }, nil)
	register(TypeTriggerRequested, 1, false, func() Data { return new(TriggerRequested) }, nil)
}

func sortTypes(ts []Type) { slices.Sort(ts) }

// upcastReportV1 reads step and compensation reports of data schema version 1. Version 1 (the
// first prototype) nested the error and gave Retry-After in seconds:
//
//	{"error": {"kind": "http", "message": "..."}, "retry_after_seconds": 2, ...}
//
// Version 2 flattens the error into error_kind and error, and gives retry_after_ms, so that a
// sub-second Retry-After survives.
func upcastReportV1(data json.RawMessage) (json.RawMessage, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep the body's numbers exactly as they were
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("data is not an object")
	}
	if raw, ok := m["error"]; ok {
		delete(m, "error")
		switch e := raw.(type) {
		case nil:
		case map[string]any:
			if k, ok := e["kind"]; ok {
				m["error_kind"] = k
			}
			if msg, ok := e["message"]; ok {
				m["error"] = msg
			}
		default:
			return nil, fmt.Errorf("error: want an object, got %T", raw)
		}
	}
	if raw, ok := m["retry_after_seconds"]; ok {
		delete(m, "retry_after_seconds")
		n, ok := raw.(json.Number)
		if !ok {
			return nil, fmt.Errorf("retry_after_seconds: want a number, got %T", raw)
		}
		secs, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("retry_after_seconds: %w", err)
		}
		m["retry_after_ms"] = int64(secs * 1000)
	}
	return json.Marshal(m)
}
