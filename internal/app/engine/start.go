package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/definitions/eval"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// Errors of Start beyond those of engine.go.
var (
	// ErrIdempotencyConflict: the idempotency key names an execution started with other
	// parameters. The error is an *IdempotencyConflictError.
	ErrIdempotencyConflict = errors.New("idempotency key reused with other parameters")
	// ErrInvalidInput: the input breaks the workflow's input schema; nothing was started. The
	// error is an *InputError.
	ErrInvalidInput = errors.New("input invalid against the workflow's input schema")
)

// IdempotencyConflictError says which parameters of a start differ from those the key's
// execution was started with.
type IdempotencyConflictError struct {
	ExecutionID string
	// Fields are the differing parameters, by their API names: workflow_id, input, priority,
	// max_retries.
	Fields []string
}

func (e *IdempotencyConflictError) Error() string {
	return fmt.Sprintf("%v: execution %s was started with another %s", ErrIdempotencyConflict, e.ExecutionID,
		strings.Join(e.Fields, ", "))
}

func (e *IdempotencyConflictError) Is(target error) bool { return target == ErrIdempotencyConflict }

// InputError lists every way an input breaks the workflow's input schema.
type InputError struct {
	WorkflowID string
	SchemaID   string
	// Problems has one line per violation: a JSON pointer into the input, then what is wrong
	// ("/blob_id: 'x' is not valid uuid").
	Problems []string
}

func (e *InputError) Error() string {
	return fmt.Sprintf("input of workflow %s is invalid against schema %s: %s", e.WorkflowID, e.SchemaID,
		strings.Join(e.Problems, "; "))
}

func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

// checkInput validates the input against the workflow's current input schema, the one Start
// pins, so that an input the run would fail at once is refused before anything is appended.
// (Should the schema change between this look-up and Start's, the core validates the pinned
// one at start, as before.)
func (e *Engine) checkInput(wf *definitions.Workflow, input any) error {
	if wf.InputSchemaID == "" {
		return nil
	}
	rev, ok := e.cfg.Definitions.Current(definitions.KindSchema, wf.InputSchemaID)
	if !ok {
		return nil // Start reports the missing schema
	}
	sc, ok := rev.Def.(*definitions.Schema)
	if !ok || sc.Compiled == nil {
		return fmt.Errorf("input schema %q of workflow %q: registry returned %T, not compiled", wf.InputSchemaID, wf.ID, rev.Def)
	}
	err := sc.Compiled.Validate(input)
	var verr *eval.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &verr):
		return &InputError{WorkflowID: wf.ID, SchemaID: wf.InputSchemaID, Problems: verr.Problems}
	default:
		return fmt.Errorf("%w: input: %v", ErrInvalid, err)
	}
}

// sameStart checks that the execution ev would have queued, which exists already, was queued
// with the same parameters: the same request again gives the same execution, another one
// under the same key is an *IdempotencyConflictError (as Step Functions answers
// ExecutionAlreadyExists).
func (e *Engine) sameStart(ctx context.Context, ev events.Event) error {
	want, ok := ev.Data.(*events.ExecutionQueued)
	if !ok {
		return fmt.Errorf("start: %T is not a queued event", ev.Data)
	}
	// The queued event is the only message on its subject: Start appends it only to an
	// execution without events.
	msg, err := stream.LastBySubject(ctx, e.js, streams.Executions, ev.Subject)
	if err != nil {
		return fmt.Errorf("read the queued event of %s: %w", want.ExecutionID, err)
	}
	stored, err := events.Decode(msg.Data)
	if err != nil {
		return fmt.Errorf("read the queued event of %s: %w", want.ExecutionID, err)
	}
	got, ok := stored.Data.(*events.ExecutionQueued)
	if !ok {
		return fmt.Errorf("read the queued event of %s: found %s", want.ExecutionID, stored.Type)
	}
	var differ []string
	if got.WorkflowID != want.WorkflowID {
		differ = append(differ, "workflow_id")
	}
	if !sameJSON(got.Input, want.Input) {
		differ = append(differ, "input")
	}
	if got.Priority != want.Priority {
		differ = append(differ, "priority")
	}
	if got.MaxRetries != want.MaxRetries {
		differ = append(differ, "max_retries")
	}
	if len(differ) > 0 {
		return &IdempotencyConflictError{ExecutionID: want.ExecutionID, Fields: differ}
	}
	return nil
}

// sameJSON compares two JSON values as encoding/json decodes them; Marshal sorts map keys.
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}
