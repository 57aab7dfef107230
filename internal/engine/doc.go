// Package engine runs executions end to end on JetStream. It wires the handlers — the
// orchestrator (the single writer of each execution's history), the step runner, the timers
// and the dispatcher — and gives the API its client methods: Start, Execution, History,
// Cancel, Retry, Queue and Ready.
//
//	eng, err := engine.New(js, engine.Config{Definitions: reg, Services: svcs})
//	err = eng.Open(ctx)       // creates or updates the streams, starts the handlers
//	defer eng.Close(ctx)      // stops them, draining
//	id, created, err := eng.Start(ctx, engine.StartRequest{WorkflowID: "blob_summary", Input: in})
//	state, err := eng.Execution(ctx, id)
//
// Start resolves the workflow and its schemas at their current revisions, pins them in the
// execution's first event (execution.queued), and appends it only if the execution has no
// event yet: the same idempotency key (whose UUIDv5 is the execution id) gives the same
// execution. Everything that happens to an execution afterwards is a command on its inbox
// (see package inbox), turned into events by the orchestrator. Execution and History read the
// execution's history from the stream and fold it.
package engine
