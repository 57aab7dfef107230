package streams

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// Inbox is the stream of commands to the orchestrator: everything that happens to an execution
// from outside (a start from the dispatcher, a step report, a fired timer, a cancel or retry
// request) is published to memmie.inbox.<execution_id> (events.InboxSubject), and only the
// orchestrator turns it into events of memmie.executions.<execution_id>.>. It is internal:
// clients never read or write it.
const Inbox = "MEMMIE_INBOX"

// SubjectTimers holds durable timers as JetStream message schedules:
// memmie.timers.<execution_id>.<timer_id>. At its time the server publishes the schedule's
// body (a timer.fired command) to memmie.inbox.<execution_id> and purges the schedule. A
// schedule's target must be a subject of its own stream, which is why timers live here.
const SubjectTimers = "memmie.timers.*.*"

// DefaultPartitions is the inbox's number of partitions when Options.Partitions is 0: enough
// to spread over a handful of processes (each consumes about DefaultPartitions/k of them), few
// enough that each process's pull consumers stay cheap.
const DefaultPartitions = 16

// MaxPartitions bounds Options.Partitions.
const MaxPartitions = 1024

// SubjectInboxPartitions is the filter of every stored command:
// memmie.inbox.<partition>.<execution_id> (see InboxConfig).
const SubjectInboxPartitions = "memmie.inbox.*.*"

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

// partitions returns Options.Partitions, or DefaultPartitions.
func (o Options) partitions() int {
	if o.Partitions <= 0 {
		return DefaultPartitions
	}
	return min(o.Partitions, MaxPartitions)
}

// InboxPartitions returns the number of inbox partitions opts configure.
func InboxPartitions(opts Options) int { return opts.partitions() }

// InboxPartitionFilter returns the filter of one partition's commands:
// memmie.inbox.<partition>.*.
func InboxPartitionFilter(partition int) string {
	return "memmie.inbox." + strconv.Itoa(partition) + ".*"
}

// ParseInboxPartitionSubject splits memmie.inbox.<partition>.<execution_id>, the subject a
// command is stored under.
func ParseInboxPartitionSubject(subject string) (partition int, executionID string, err error) {
	t := strings.Split(subject, ".")
	if len(t) != 4 || t[0] != "memmie" || t[1] != "inbox" {
		return 0, "", fmt.Errorf("parse inbox subject %q: want memmie.inbox.<partition>.<execution_id>", subject)
	}
	partition, err = strconv.Atoi(t[2])
	if err != nil || partition < 0 || strconv.Itoa(partition) != t[2] {
		return 0, "", fmt.Errorf("parse inbox subject %q: partition %q is not a number", subject, t[2])
	}
	if err := events.ValidToken(t[3]); err != nil {
		return 0, "", fmt.Errorf("parse inbox subject %q: execution id: %w", subject, err)
	}
	return partition, t[3], nil
}

// InboxConfig returns the configuration of the inbox stream.
//
// Choices, and why:
//   - Work-queue retention: a command is deleted once the orchestrator acknowledges it, because
//     by then it is recorded in the execution's history (or known to be stale). The stream is a
//     queue, not a record; it stays small.
//   - Partitions by execution id: a subject transform stores a command published to
//     memmie.inbox.<id> as memmie.inbox.<partition>.<id>, where partition is the server's
//     partition() hash of the id (Options.Partitions of them). The orchestrator has one durable
//     consumer per partition, and the processes share the partitions out, so that an
//     execution's commands reach the process that holds its state in cache. Publishers keep
//     publishing to memmie.inbox.<id>: the server applies the transform to every message it
//     stores, those that message schedules fire included (nats-server 2.15,
//     stream.processJetStreamMsg), so nothing outside the orchestrator knows partitions.
//     Changing the number re-maps executions; commands stored under a partition that no
//     longer exists are not consumed, so change it only with an empty inbox: a start with
//     another number is refused (Diff), and `memmie streams update --partitions` refuses
//     while the inbox holds commands.
//   - Message schedules, and so discard old and roll-ups (the server requires both): durable
//     timers are schedules on memmie.timers.*.* that fire into memmie.inbox.*. Nothing sets a
//     limit, so discard old never drops a command.
//   - The duplicate window (Nats-Msg-Id = the command's event id) drops a command published
//     twice, e.g. a step report sent again after its ack was lost.
func InboxConfig(opts Options) jetstream.StreamConfig {
	opts, compression := opts.withDefaults()
	return jetstream.StreamConfig{
		Name:        Inbox,
		Description: "Commands to the orchestrator, and durable timers (internal)",
		Subjects:    []string{events.SubjectInbox, SubjectTimers},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      events.SubjectInbox,
			Destination: fmt.Sprintf("memmie.inbox.{{partition(%d,1)}}.{{wildcard(1)}}", opts.partitions()),
		},
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
