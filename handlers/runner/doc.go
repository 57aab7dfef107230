// Package runner makes the HTTP attempts that executions schedule. It consumes
// step.scheduled and compensation.scheduled from MEMMIE_EXECUTIONS, calls the service named
// by the attempt's resolved request through the services registry (sending the step's
// Idempotency-Key and X-Memmie-Execution-Id), and sends what happened — status, duration, and
// the decoded body or the kind of error — as a step.reported or compensation.reported command
// to the execution's inbox. When the execution's orchestrator runs in the same process
// (Config.Local), the report is handed to it instead, and the attempt is acknowledged once the
// report is appended to the history; a report it does not take goes to the inbox. It never
// decides whether a failure is final: the orchestrator does.
//
//	r, err := runner.New(js, runner.Config{Caller: caller, DeadLetter: dl})
//	err = r.Start(ctx)
//	defer r.Stop(ctx)
//
// A report's id is derived from (execution, run, step, attempt): a call redelivered after a
// crash reports under the same id, and the inbox's duplicate window, or else the execution's
// state, keeps one. The runner pulls an attempt only for a free worker, and the consume loop
// sends InProgress while a call runs, so a long call is not delivered twice, and the short
// AckWait (5 s) brings a crashed runner's attempts back well within their deadlines. A
// report that cannot be published is published again in place, never by calling again. An
// attempt delivered Config.MaxDeliver times is not called again: it is dead-lettered and
// reported as a timed-out attempt, so that no execution waits for it. transform steps never
// reach the runner; the core runs them.
//
// The runner that holds an attempt enforces its deadline; no timer is set for it. The call's
// context ends at the attempt's deadline (step.scheduled's Deadline, set by the orchestrator
// as the step's timeout from scheduling; plus Config.ClockSkew, the orchestrator's clock
// being another's), so a call that outlives it is cut and reported as a timeout. An attempt
// taken up after its deadline (a backlog, or the redelivery of a runner that crashed
// mid-call) is not called: it is reported as timed out ("no report before the attempt's
// deadline", the words of a timeout timer). A crash therefore delays a timeout by up to
// AckWait. A report that is lost after it was sent is the reconciler's to make up for.
package runner
