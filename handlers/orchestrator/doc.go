// Package orchestrator is the single writer of execution histories. It consumes the commands
// on MEMMIE_INBOX (memmie.inbox.<execution_id>: starts, step and compensation reports, fired
// timers, cancel and retry requests, the blobs handler's deltas rejections) and, for each, appends the command as an input event
// together with the decisions the core takes on it, to memmie.executions.<execution_id>.<tail>:
// the first message expects the sequence of the execution's last event
// (Nats-Expected-Last-Subject-Sequence on memmie.executions.<id>.>) and each next one the one
// before it (stream.AppendChained; one atomic batch with Config.Atomic).
//
//	o, err := orchestrator.New(js, orchestrator.Config{DeadLetter: dl})
//	err = o.Start(ctx)
//	err = o.Assign(ctx, []int{0, 1, 2}) // the inbox partitions this process consumes
//	defer o.Stop(ctx)
//
// The inbox is partitioned by execution id (streams.InboxConfig): a command sent to
// memmie.inbox.<id> is stored as memmie.inbox.<partition>.<id>, and each partition has a
// durable consumer, orchestrator-<partition>. The processes share the partitions out (the
// engine follows the live processes and calls Assign, see package lease), so an execution's
// commands reach the one process that holds its state in cache, and several processes
// scale out without thrashing one another's caches. Partition consumers pin one client at a
// time (priority policy pinned_client, nats-server 2.11): while a partition moves, the process
// that gives it up drains it and unpins it before the next one gets a command, and a crashed
// process's pin expires after Config.PinnedTTL. Neither is what keeps histories correct —
// the expected-sequence append is — but together they keep conflicts to the moments a
// partition moves. Stats counts conflicts, cache hits and misses, and history loads.
//
// For one command:
//
//	state  = cache[execution] (or its history, folded, on a miss)
//	state' = state.Apply(input)          a stale input (duplicate, late) is acked, not recorded
//	out    = execution.Decide(state', input, now)
//	append [input, out...] expecting state's last sequence
//	   conflict: forget the cached state, reload, decide again
//	   success:  cache[execution] = state' + out, with the append's sequence
//
// The history is never replayed on the hot path: the cache (LRU, validated by the sequence the
// last append returned) holds each execution's state. A miss reads the last event first: an
// execution whose last event is its queued event needs no history load, and an input to an
// execution that has ended is dropped without one (but a retry of a failed one, and the
// rejection of a completed one's deltas). A miss reads nothing when the process appended the
// execution's queued event itself and said so (Seed): its first input starts from that event,
// trusted as a cached state is (the append expects its sequence; an input that conflicts, does
// not apply or is stale against it is decided again on the history read from the stream).
// Commands of one execution are processed one at a time, in order; commands of different
// executions in parallel.
//
// Record takes an input made in the same process, a step report of the runner there, when the
// execution's partition is consumed here: it is decided as a command is, under the same
// per-execution lock, and Record returns once it is appended, so that the runner acknowledges
// its attempt only then. Otherwise (another process's partition, a partition being given up,
// a stop, an append that fails) the input goes to the inbox, as it would without Record. The workflow a queued
// event pins is compiled once per revision and shared by that revision's executions (a
// bounded LRU, Config.WorkflowCache).
//
// A fired timer that arrives before it is due (message schedules have 1-second granularity) is
// held with NakWithDelay until it is. A command that cannot be decoded, is not an execution
// input, names an unknown execution, or does not apply to its history is dead-lettered on
// memmie.deadletter.orchestrator, and the consumer goes on.
//
// The orchestrator never calls services and never reads a clock except Config.Now.
package orchestrator
