package streams

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// Inbox is the stream of commands to the orchestrator: everything that happens to an execution
// from outside (a start from the dispatcher, a step report, a fired timer, a cancel or retry
// request) is published to memmie.inbox.<execution_id> (events.InboxSubject), and only the orchestrator turns it
// into events of memmie.executions.<execution_id>.>. It is internal: clients never read or
// write it.
const Inbox = "MEMMIE_INBOX"

// SubjectTimers holds durable timers as JetStream message schedules:
// memmie.timers.<execution_id>.<timer_id>. At its time the server publishes the schedule's
// body (a timer.fired command) to memmie.inbox.<execution_id> and purges the schedule. A
// schedule's target must be a subject of its own stream, which is why timers live here.
const SubjectTimers = "memmie.timers.*.*"

// TimerScheduleSubject returns memmie.timers.<execution_id>.<timer_id>, where timer_id is the
// id of the timer.fired event the schedule delivers: one schedule per timer, so that a timer
// never replaces another.
func TimerScheduleSubject(executionID, timerID string) (string, error) {
	if err := events.ValidToken(executionID); err != nil {
		return "", fmt.Errorf("timer subject: execution id: %w", err)
	}
	if err := events.ValidToken(timerID); err != nil {
		return "", fmt.Errorf("timer subject: timer id: %w", err)
	}
	return "memmie.timers." + executionID + "." + timerID, nil
}

// InboxConfig returns the configuration of the inbox stream.
//
// Choices, and why:
//   - Work-queue retention: a command is deleted once the orchestrator acknowledges it, because
//     by then it is recorded in the execution's history (or known to be stale). The stream is a
//     queue, not a record; it stays small.
//   - Message schedules, and so discard old and roll-ups (the server requires both): durable
//     timers are schedules on memmie.timers.*.* that fire into memmie.inbox.*. Nothing sets a
//     limit, so discard old never drops a command.
//   - The duplicate window (Nats-Msg-Id = the command's event id) drops a command published
//     twice, e.g. a step report sent again after its ack was lost.
func InboxConfig(opts Options) jetstream.StreamConfig {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	compression := jetstream.S2Compression
	if opts.Storage == jetstream.MemoryStorage {
		compression = jetstream.NoCompression
	}
	return jetstream.StreamConfig{
		Name:              Inbox,
		Description:       "Commands to the orchestrator, and durable timers (internal)",
		Subjects:          []string{events.SubjectInbox, SubjectTimers},
		Retention:         jetstream.WorkQueuePolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        MaxMsgSize,
		Discard:           jetstream.DiscardOld,
		Storage:           opts.Storage,
		Replicas:          opts.Replicas,
		Duplicates:        DuplicateWindow,
		AllowRollup:       true,
		AllowMsgSchedules: true,
		Compression:       compression,
	}
}
