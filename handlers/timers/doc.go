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
// schedule are in the server's store. A run's deadline, far off (an hour by default) while
// nearly every run ends within a second, is not scheduled at once: the started event is held
// for ScheduleAfter, and then the deadline is scheduled only if the run has not ended (read
// from the last of the execution's own events). So a run that ends in time stores no
// schedule and needs no purge, and the handler does not read the ends of executions; the
// schedule of a longer run fires at its deadline into a state that ignores it. A timer that
// fires for an attempt or a run that is no longer current is ignored by the core; an attempt
// timeout timer set by an older version is recorded as it always was.
package timers
