// Package dispatcher admits queued executions. Queue entries are events (execution.queued,
// execution.requeued); the dispatcher follows them on MEMMIE_EXECUTIONS with an ordered
// consumer — from its last snapshot at start-up (see below), which rebuilds the queue, then
// live — and sends a start command (execution.started) to an execution's inbox when its turn
// comes: higher priority first, FIFO (stream order) within a priority, with at most
// Config.MaxRunning executions running (started, and not yet completed, failed, cancelled or
// waiting for an automatic retry; admitted ones count at once). A requeued run takes the
// priority its event carries (ExecutionRequeued.Priority), else the one in the view; for an
// execution the view does not know and an event without it, the priority is read from the
// queued event, off the consumer's callback and again until it can be read: never
// dead-lettered.
//
//	d, err := dispatcher.New(js, dispatcher.Config{MaxRunning: 100, DeadLetter: dl})
//	err = d.Start(ctx) // returns once the queue is rebuilt
//	defer d.Stop(ctx)
//
// A start is idempotent (its id is the run's), so sending it twice — after a crash, or when
// the started event does not show up within Config.ResendAfter — is harmless.
//
// The dispatcher holds no state that the stream does not: its view is a fold of the queue
// events. The leader writes a snapshot of it (SubjectSnapshots on MEMMIE_LEASES, in parts) every
// Config.SnapshotEvery, and when it stops; a dispatcher starts from the last one and replays
// only the events after it, so start-up reads the live work and the recent tail, not the whole
// history. It counts the executions running in the whole system, so one dispatcher admits at a
// time for MaxRunning to hold across processes: with Config.Leader set (the engine passes the
// dispatcher's lease, see package lease), only the leader admits, and the others follow the
// stream, ready to take over. The starts of one admission round are pipelined: sent as async
// publishes (each with its id as Nats-Msg-Id, expecting the inbox stream), then their acks
// awaited; a start whose publish or ack fails goes back to the queue and is sent again,
// counting as running meanwhile. Each start is published within the lease's validity (the
// lease is checked before each one, the acks are awaited until Leader.ValidUntil, and nothing
// is published while disconnected), so a leader whose lease lapsed does not admit past it. A new leader first reads the start commands still waiting in
// the inbox for the executions queued in its view — executions the last leader admitted that
// have not started — and counts them as running.
package dispatcher
