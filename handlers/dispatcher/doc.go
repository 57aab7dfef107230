// Package dispatcher admits queued executions. Queue entries are events (execution.queued,
// execution.requeued); the dispatcher follows them on MEMMIE_EXECUTIONS with an ordered
// consumer — from the first message at start-up, which rebuilds the queue, then live — and
// sends a start command (execution.started) to an execution's inbox when its turn comes:
// higher priority first, FIFO (stream order) within a priority, with at most
// Config.MaxRunning executions running (started, and not yet completed, failed, cancelled or
// waiting for an automatic retry; admitted ones count at once).
//
//	d, err := dispatcher.New(js, dispatcher.Config{MaxRunning: 100, DeadLetter: dl})
//	err = d.Start(ctx) // returns once the queue is rebuilt
//	defer d.Stop(ctx)
//
// A start is idempotent (its id is the run's), so sending it twice — after a crash, or when
// the started event does not show up within Config.ResendAfter — is harmless.
//
// The dispatcher holds no state that the stream does not: its view is a fold of the queue
// events. It counts the executions running in the whole system, so one dispatcher admits at a
// time for MaxRunning to hold across processes: with Config.Leader set (the engine passes the
// dispatcher's lease, see package lease), only the leader admits, and the others follow the
// stream, ready to take over. A new leader first reads the start commands still waiting in
// the inbox — executions the last leader admitted that have not started — and counts them as
// running; it stops admitting as soon as its lease is not renewed in time.
package dispatcher
