package definitions_test

import (
	"errors"
	"fmt"

	"github.com/memmie/memmie/definitions"
)

func ExampleParseWorkflow() {
	doc := []byte(`
id: greet
steps:
  - id: hello
    type: transform
    input_map:
      greeting: "Hello {$.input.name}"
  - id: shout
    type: api_call
    service: core
    endpoint: https://example.com/shout
    input_map:
      text: $.steps.later.output
`)
	_, err := definitions.ParseWorkflow("greet.yaml", doc)
	var probs definitions.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			fmt.Println(p)
		}
	}
	// Output:
	// greet.yaml:11: steps[1].endpoint: "https://example.com/shout" is an absolute URL: give a path, the service's base_url comes from the services file
	// greet.yaml:13: steps[1].input_map.text: $.steps.later.output refers to unknown step "later"
}

func ExampleTrigger_Matches() {
	trigger := definitions.Trigger{
		Event: definitions.EventOnCreate,
		Conditions: []definitions.TriggerCondition{
			{Field: "metadata.type", Operator: definitions.OpIn, Value: []any{"chapter", "outline"}},
			{Field: "metadata.words", Operator: definitions.OpGte, Value: 1000},
		},
	}
	data := map[string]any{"metadata": map[string]any{"type": "chapter", "words": 1200.0}}
	fmt.Println(trigger.Matches("created", data))
	fmt.Println(trigger.Matches("updated", data))
	// Output:
	// true
	// false
}
