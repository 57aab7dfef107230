// Package reconciler re-derives the work that fell through: a timer.fired command that never
// reached the inbox, or was lost from it (a timer event dead-lettered, a command deleted, an
// fsync interval lost in a crash), and an attempt whose report was lost. Periodically, and
// at start, it looks at every execution that has not ended, folds the history of those that
// look stuck, and sends again the timers of State.Pending that are overdue by more than
// Config.Grace. The orchestrator records a timer that is still current and drops one that is
// not, so sending one again is safe.
//
//	r, err := reconciler.New(js, reconciler.Config{Leader: lease})
//	err = r.Start(ctx)
//	defer r.Stop(ctx)
//
// An attempt's timeout has no timer: the runner that holds the attempt reports a timeout by
// its deadline, or AckWait after it when a runner crashed. An attempt still in flight Grace
// past its deadline has therefore lost its report: the reconciler fires the attempt's
// timeout (Request.Timeout, the timer.fired an attempt timeout timer has always sent), and
// the attempt fails as a timeout and is retried by the step's policy.
//
// A pass costs little when nothing is stuck:
//   - it reads the lifecycle events (queued, requeued, completed, failed, cancelled) stored
//     since the last pass, with an ordered consumer: the first pass reads them all, later
//     ones only the new ones; executions that ended cost nothing more;
//   - for each execution not ended, it reads the last event (a direct get). One waiting for
//     the dispatcher, or whose last event is younger than Grace, is left alone;
//   - then it asks whether a command for it waits in the inbox (the orchestrator is behind:
//     nothing is lost), and only then reads and folds the history. An execution whose
//     timers are not yet overdue is not read again until they are, unless it moves.
//
// What it leaves to others: a queued execution whose start was lost is the dispatcher's (it
// sends a start again after its ResendAfter). An input that is in no history and is no
// timer (a cancel or retry request lost before the orchestrator took it up) cannot be
// re-derived; the client that sent it sees no change and asks again. An execution that keeps
// moving is not looked at: a lost run deadline fires once it stops moving.
//
// One process reconciles at a time: the holder of the lease memmie.leases.leader.reconciler
// (Config.Leader). It must never append to an execution's history: it only sends commands
// to the inbox, as the timers handler does.
package reconciler
