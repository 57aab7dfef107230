package execution

import (
	"fmt"
	"strconv"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/definitions/eval"
)

// activeStep returns the step whose attempt is in flight, reported or waiting to be retried, or
// -1. Steps run one at a time, so there is at most one.
func (s *State) activeStep() int {
	for i := range s.Steps {
		switch s.Steps[i].Status {
		case StepScheduled, StepReported, StepRetryScheduled:
			return i
		}
	}
	return -1
}

// activeCompensation is activeStep for compensations.
func (s *State) activeCompensation() int {
	for i := range s.Steps {
		if c := s.Steps[i].Compensation; c != nil {
			switch c.Status {
			case StepScheduled, StepReported, StepRetryScheduled:
				return i
			}
		}
	}
	return -1
}

// nextPending returns the first step that has not run in this run (nor has a result kept from
// an earlier one), or -1.
func (s *State) nextPending() int {
	for i := range s.Steps {
		if s.Steps[i].Status == StepPending {
			return i
		}
	}
	return -1
}

// nextToCompensate returns the last step that succeeded, has a compensation and was not
// compensated in this run, or -1: compensations run in reverse step order, one at a time.
func (s *State) nextToCompensate() int {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		st := &s.Steps[i]
		if st.Status == StepSucceeded && st.Compensation == nil && s.workflow.Steps[i].Compensation != nil {
			return i
		}
	}
	return -1
}

// failedStep returns the step whose failure stops the run (on_failure: fail), or -1.
func (s *State) failedStep() int {
	for i := range s.Steps {
		if s.Steps[i].Status == StepFailed && s.workflow.Steps[i].FailureAction() == definitions.OnFailureFail {
			return i
		}
	}
	return -1
}

// stopping reports whether the run must stop scheduling: a cancel, the deadline, or a step that
// failed with on_failure: fail.
func (s *State) stopping() bool {
	return s.CancelRequested || s.DeadlineExceeded || s.failedStep() >= 0
}

// idempotencyKey is <execution_id>/<step_id> for a step and <execution_id>/<step_id>/compensate
// for its compensation. A step that runs again after its compensation undid it gets a new key
// (<execution_id>/<step_id>/2, ...), since a service would otherwise replay the undone answer.
func (s *State) idempotencyKey(i int, compensation bool) string {
	key := s.ExecutionID + "/" + s.Steps[i].ID
	if g := s.Steps[i].Generation; g > 0 {
		key += "/" + strconv.Itoa(g+1)
	}
	if compensation {
		key += "/compensate"
	}
	return key
}

// scope builds what input maps, conditions and the workflow output_map read (see eval.Scope).
func (s *State) scope() eval.Scope {
	steps := make(map[string]any, len(s.Steps))
	vars := map[string]any{}
	for i := range s.Steps {
		st := &s.Steps[i]
		entry := map[string]any{"status": string(st.Status), "output": nil}
		if st.Status == StepSucceeded {
			entry["output"] = st.Output
			obj, _ := st.Output.(map[string]any)
			for _, name := range s.workflow.Steps[i].Variables {
				vars[name] = obj[name] // a missing key exports null
			}
		}
		steps[st.ID] = entry
	}
	wf := s.workflow
	return eval.Scope{
		"input":       s.Input,
		"steps":       steps,
		"execution":   map[string]any{"id": s.ExecutionID},
		"provider_id": s.ProviderID,
		"workflow": map[string]any{
			"id":          wf.ID,
			"name":        wf.Name,
			"provider_id": wf.ProviderID,
			"revision":    float64(s.WorkflowRevision),
		},
		"vars": vars,
	}
}

// output is the workflow's output_map over the scope or, without one, the shallow merge of the
// object outputs of the steps that succeeded, in step order, later wins.
func (s *State) output() (any, error) {
	if m := s.workflow.Compiled.OutputMap; m != nil {
		return m.Eval(s.scope())
	}
	out := map[string]any{}
	for i := range s.Steps {
		if s.Steps[i].Status != StepSucceeded {
			continue
		}
		if obj, ok := s.Steps[i].Output.(map[string]any); ok {
			for k, v := range obj {
				out[k] = v
			}
		}
	}
	return out, nil
}

// expand fills an endpoint's parameters from the resolved input.
func expand(t *eval.PathTemplate, input any) (string, error) {
	if t == nil {
		return "", nil
	}
	params, _ := input.(map[string]any)
	path, err := t.Expand(params)
	if err != nil {
		return "", fmt.Errorf("%s: %w", t.String(), err)
	}
	return path, nil
}
