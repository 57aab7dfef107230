// Package timers makes execution timers durable: retry backoffs (step, compensation and
// execution retries) and execution deadlines. It consumes the events that ask for a timer
// (step.retry_scheduled, compensation.retry_scheduled, started, retry_scheduled) and delivers
// a timer.fired command, carrying the timer's (run, step, attempt), to the execution's inbox
// at its due time. An attempt's timeout is no timer: the runner that holds the attempt
// enforces its deadline (see package runner), so the attempts that end in time, nearly all
// of them, cost no schedule.
//
//	t, err := timers.New(js, timers.Config{DeadLetter: dl})
//	err = t.Start(ctx)
//	defer t.Stop(ctx)
//
// How a timer waits depends on how far off it is (Config.ScheduleAfter, 10 s by default):
//   - due soon: the event's message is held on the consumer with NakWithDelay and fires when
//     it comes back. Exact, but it holds an ack slot and counts a delivery, so the consumer
//     has MaxDeliver -1 and a large MaxAckPending.
//   - due later: a JetStream message schedule (Nats-Schedule: @at <second>,
//     Nats-Schedule-Target: memmie.inbox.<id>) on memmie.timers.<id>.<timer_id> in
//     MEMMIE_INBOX, which the server publishes at its time and then purges. It holds nothing,
//     but has 1-second granularity: the time is rounded up, and a command that still arrives
//     early is held by the orchestrator until due.
//
// Both survive a restart of every process and of the server: the held message and the
// schedule are in the server's store. When an execution ends, its deadline's schedule is
// purged. A timer that fires for an attempt that is no longer current is ignored by the
// core; an attempt timeout timer set by an older version is recorded as it always was.
package timers
