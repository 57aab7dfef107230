// Package definitions reads, checks and compiles memmie's three kinds of definition: schemas,
// workflows and providers, written in YAML or JSON.
//
// Load reads a tree of definition files and checks them one by one and as a set; it reports
// every problem, each as file:line: field: message. ParseSchema, ParseWorkflow and
// ParseProvider read one document (the body of an HTTP PUT, say). Compile checks and compiles
// a definition decoded some other way, such as a workflow pinned in an execution's events.
//
//	set, err := definitions.Load("definitions")
//	var probs definitions.Problems
//	if errors.As(err, &probs) {
//		for _, p := range probs {
//			fmt.Println(p) // workflows/x.yaml:12: steps[1].endpoint: "/a/../b" must not contain ..
//		}
//	}
//
// Field paths are dotted, with 0-based list indexes in brackets: steps[2].retry.max_attempts.
// A problem with no better place is at line 1.
//
// Trigger matching (ProviderBinding.Matches, Trigger.Matches, TriggerCondition.Holds) is pure:
// event name and blob event data in, a boolean out.
//
// The package never performs I/O beyond reading the files Load is given: no network, no
// clock. It depends on no other memmie package but definitions/eval.
package definitions
