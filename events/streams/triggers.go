package streams

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// Triggers is the stream of trigger requests: once the writer of blob histories has recorded a
// blob event, it asks the trigger matcher, on memmie.triggers.<blob_id>
// (events.TriggerRequested), to start the executions the event triggers. It is internal:
// clients never read or write it.
const Triggers = "MEMMIE_TRIGGERS"

// TriggersConfig returns the configuration of the trigger requests' stream.
//
// Choices, and why:
//   - Work-queue retention: a request is a command, consumed once by the matcher's one durable
//     consumer and deleted when it is acknowledged; its record is the executions it started
//     (their queued events name the blob event) or its dead letter.
//   - The duplicate window (Nats-Msg-Id = the request's id, derived from the blob event's)
//     drops the request a writer sends again when it handles the same event again (a
//     redelivery after a crash); past it, the executions' deterministic ids start nothing new.
//   - Discard new with no limit: should an operator add one, a full stream refuses requests
//     loudly (the writer retries) rather than dropping them.
func TriggersConfig(opts Options) jetstream.StreamConfig {
	opts, compression := opts.withDefaults()
	return jetstream.StreamConfig{
		Name:              Triggers,
		Description:       "Requests to start the executions recorded blob events trigger (internal)",
		Subjects:          []string{events.SubjectTriggers},
		Retention:         jetstream.WorkQueuePolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        MaxMsgSize,
		Discard:           jetstream.DiscardNew,
		Storage:           opts.Storage,
		Replicas:          opts.Replicas,
		Duplicates:        DuplicateWindow,
		Compression:       compression,
	}
}
