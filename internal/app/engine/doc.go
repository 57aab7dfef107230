// Package engine runs executions end to end on JetStream. It wires the handlers — the
// orchestrator (the single writer of each execution's history), the step runner, the timers,
// the dispatcher, the reconciler, the writer of blob histories (handlers/blobs, which asks
// for the triggers of each recorded blob event on MEMMIE_TRIGGERS) and the trigger matcher
// (handlers/triggers, which queues the executions they start with Start's queued event) —
// and gives the API its client methods: Start, Execution,
// History, HistoryPage, Cancel, Retry, Queue and Ready.
//
//	eng, err := engine.New(js, engine.Config{Definitions: reg, Services: svcs})
//	err = eng.Open(ctx)       // creates missing streams (never rewrites one), starts the handlers
//	defer eng.Close(ctx)      // stops them, draining
//	id, created, err := eng.Start(ctx, engine.StartRequest{WorkflowID: "blob_summary", Input: in})
//	state, err := eng.Execution(ctx, id)
//
// Start resolves the workflow and its schemas at their current revisions, pins them in the
// execution's first event (execution.queued), and appends it only if the execution has no
// event yet: the same idempotency key (whose UUIDv5 is the execution id) gives the same
// execution, and is refused with other parameters (IdempotencyConflictError). An input that
// breaks the input schema is refused before anything is appended (InputError). Everything that happens to an execution afterwards is a command on its inbox
// (see package inbox), turned into events by the orchestrator; but a step report of an
// execution whose partition this process consumes, which the runner hands to the
// orchestrator here (runner.Config.Local). A queued event Start appended is told to the
// orchestrator here too (Orchestrator.Seed), so that the execution's first input needs no
// read of the stream. Execution and History read the
// execution's history from the stream and fold it; HistoryPage reads one page of it.
//
// Any number of engines (memmie serve processes) may run against one NATS; they share the
// work with no coordinator:
//   - the runner, timers, trigger matcher and blobs consumers are shared durable consumers:
//     each attempt, timer, trigger request or blob event goes to one process (a blob's deltas are appended under optimistic
//     concurrency, so their versions stay gapless whichever process writes);
//   - the inbox is partitioned by execution id, and each live process (a TTL'd heartbeat on
//     MEMMIE_LEASES) consumes the partitions that rendezvous hashing gives it, so an
//     execution's commands reach the process that has its state in cache; a process that
//     stops hands its partitions over at once, one that crashes after Cluster.TTL;
//   - one dispatcher admits executions, the holder of the dispatcher's lease, so that
//     --max-running holds across processes; the others follow the queue, ready to take over;
//   - one reconciler re-issues lost timers, the holder of the reconciler's lease.
//
// Whatever the partitions do, the optimistic-concurrency append keeps each history correct.
// Stats reports this process's OCC conflicts, cache hits and misses, history loads,
// partitions and role. Config.Hooks injects crashes at named points (package faults), for
// the fault tests.
package engine
