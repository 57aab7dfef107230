package execution_test

import (
	"fmt"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// A workflow of transforms runs within one decision: the dispatcher's start leads to every
// step's result and the execution's end.
func ExampleDecide() {
	wf, err := definitions.ParseWorkflow("greet.yaml", []byte(`
id: greet
steps:
  - {id: hello, type: transform, input_map: {greeting: "Hello, {$.input.name}"}}
  - {id: shout, type: transform, condition: "$.input.loud == true", input_map: {greeting: "HELLO"}}
`))
	if err != nil {
		panic(err)
	}
	pinned, _ := definitions.Canonical(wf)
	now := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)

	var s execution.State
	queued := events.NewExecution(&events.ExecutionQueued{ExecutionID: "ex-1", WorkflowID: "greet", WorkflowRevision: 1,
		Workflow: pinned, Input: map[string]any{"name": "Ada"}}, events.SourceAPI, now)
	if err := s.Apply(queued); err != nil {
		panic(err)
	}
	started, _ := execution.Start(&s, now)
	if err := s.Apply(started); err != nil {
		panic(err)
	}
	decisions, err := execution.Decide(s, started, now)
	if err != nil {
		panic(err)
	}
	for _, ev := range decisions {
		fmt.Println(ev.Type)
		if err := s.Apply(ev); err != nil {
			panic(err)
		}
	}
	fmt.Println(s.Status, s.Output)
	// Output:
	// memmie.execution.step.succeeded
	// memmie.execution.step.skipped
	// memmie.execution.completed
	// completed map[greeting:Hello, Ada]
}
