package streams

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// Stream names.
const (
	Blobs       = "MEMMIE_BLOBS"
	Executions  = "MEMMIE_EXECUTIONS"
	Deltas      = "MEMMIE_DELTAS"
	Definitions = "MEMMIE_DEFINITIONS"
	DeadLetter  = "MEMMIE_DEADLETTER"
)

// DuplicateWindow is how long the streams that take unconditional publishes remember a
// Nats-Msg-Id: the inbox, MEMMIE_BLOBS, MEMMIE_TRIGGERS and the dead letters. Two minutes (the
// server's default) covers a publisher's retries and a consumer's redeliveries after a crash
// (its AckWait is 30 s), and a second redrive of a dead letter soon after the first. Past it,
// correctness does not depend on the window: a command published again is stale against the
// execution's state, a re-published blob event is recognised by the blob's.
const DuplicateWindow = 2 * time.Minute

// HistoryDuplicateWindow is the window of the histories, MEMMIE_EXECUTIONS, MEMMIE_DELTAS and
// MEMMIE_DEFINITIONS, which only memmie appends to and every append of which carries an
// expected last subject sequence (stream.Append, AppendChained). An append retried after a
// lost ack is refused by its expectation however old its first try is, and stream.Append then
// finds its own message and reports success: the window only spares that read for a retry
// within it. It is short because the server holds every id of the window in memory, and this
// is the busiest stream: about 2,000 ids a second at saturation on a 2-core machine, some 150
// bytes each (measured: 200,000 ids held cost 29 MB of heap), so 35 MB at two minutes, grown
// over the first two minutes of a run, and 9 MB at 30 s. 30 s still covers an immediate retry
// after a publish timeout (5 s by default).
const HistoryDuplicateWindow = 30 * time.Second

// MaxMsgSize bounds one message. It equals NATS' default max_payload (1 MiB), which a publish
// cannot exceed anyway; the stream limit makes the failure explicit. An event leaves room for
// its headers (events.MaxEventSize).
const MaxMsgSize = 1 << 20

// Options vary the configurations per deployment.
type Options struct {
	// Replicas of every stream. Defaults to 1; use 3 on a cluster. A start whose replicas
	// differ from an existing stream's is refused (Diff), not scaled.
	Replicas int
	// Storage of every stream. Defaults to jetstream.FileStorage: the streams are the source
	// of truth. Tests may use jetstream.MemoryStorage.
	Storage jetstream.StorageType
	// Partitions of the inbox (see InboxConfig) and of MEMMIE_BLOBS (BlobsTransform). Every
	// process must use the same number; a start with another number than the streams have is
	// refused (Diff). Defaults to DefaultPartitions.
	Partitions int
}

// withDefaults returns the options with their defaults, and the compression of their storage:
// S2 on file storage, none in memory.
func (o Options) withDefaults() (Options, jetstream.StoreCompression) {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Storage == jetstream.MemoryStorage {
		return o, jetstream.NoCompression
	}
	return o, jetstream.S2Compression
}

// Configs returns the configuration of every stream, in a fixed order: blobs, executions,
// deltas, definitions, dead letter.
//
// Common choices, and why:
//   - Limits retention, no MaxAge, MaxMsgs, MaxBytes or per-subject limit: nothing expires,
//     because projections are rebuilt from the streams.
//   - Discard new: should an operator add a limit, a full stream refuses writes loudly rather
//     than dropping history. With no limit set, the policy never applies.
//   - AllowDirect: handlers read the last message of a subject (a blob's last delta, a
//     definition's current revision, an execution's last event) without a consumer.
//   - Deletes and purges stay allowed: an operator may have to erase a blob's content (privacy
//     requests).
//   - No message schedules and no roll-ups: durable timers are schedules on the inbox
//     (InboxConfig). A stream created by an older memmie keeps both, and discard old, since
//     the server never turns schedules off again (see Diff).
//   - S2 compression on file storage: events are JSON, which compresses well; reads are rare
//     next to appends.
//   - The duplicate window: HistoryDuplicateWindow on the histories (executions, deltas,
//     definitions), whose appends all carry an expectation; DuplicateWindow on the blob events
//     and the dead letters, which are published unconditionally.
//
// MEMMIE_BLOBS is partitioned by blob id (BlobsTransform), as the inbox is by execution id: a
// client publishes to memmie.blobs.<blob_id>.<kind>, the server stores the event as
// memmie.blobs.<partition>.<blob_id>.<kind>, and the blobs handler consumes each partition with
// a consumer pinned to one process (clients never read the stream; the deltas are its record).
// Changing the number re-maps blobs: a blob's events stored under the old number would be
// consumed by another partition's consumer than its new ones, so `memmie streams update`
// refuses while a blob event is not yet processed.
func Configs(opts Options) []jetstream.StreamConfig {
	opts, compression := opts.withDefaults()
	base := func(name, description, subject string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:              name,
			Description:       description,
			Subjects:          []string{subject},
			Retention:         jetstream.LimitsPolicy,
			MaxConsumers:      -1,
			MaxMsgs:           -1,
			MaxBytes:          -1,
			MaxAge:            0,
			MaxMsgsPerSubject: -1,
			MaxMsgSize:        MaxMsgSize,
			Discard:           jetstream.DiscardNew,
			Storage:           opts.Storage,
			Replicas:          opts.Replicas,
			Duplicates:        DuplicateWindow,
			AllowDirect:       true,
			Compression:       compression,
		}
	}

	blobs := base(Blobs, "Blob events written by clients", events.SubjectBlobs)
	// Partitioned by blob id, so that one consumer per partition, each pinned to one process,
	// applies a blob's events in the order they were stored.
	blobs.SubjectTransform = BlobsTransform(opts)

	executions := base(Executions, "Every queue entry, state change and step result of every execution", events.SubjectExecutions)
	executions.Duplicates = HistoryDuplicateWindow
	// The orchestrator appends an input and its decisions as a chain of publishes, or, with
	// orchestrator.Config.Atomic, as one atomic batch (all or none).
	executions.AllowAtomicPublish = true

	deltas := base(Deltas, "Every change of every blob, in version order per blob", events.SubjectDeltas)
	deltas.Duplicates = HistoryDuplicateWindow
	// The deltas of one execution take consecutive versions of a blob: all or none.
	deltas.AllowAtomicPublish = true

	definitions := base(Definitions, "Every registered revision of every definition", events.SubjectDefinitions)
	definitions.Duplicates = HistoryDuplicateWindow
	// `memmie apply` registers a set of definitions: all or none.
	definitions.AllowAtomicPublish = true

	deadLetter := base(DeadLetter, "Messages that could not be processed, with the reason", events.SubjectDeadLetter)

	return []jetstream.StreamConfig{blobs, executions, deltas, definitions, deadLetter}
}

// Config returns the configuration of the stream called name.
func Config(name string, opts Options) (jetstream.StreamConfig, error) {
	for _, cfg := range Configs(opts) {
		if cfg.Name == name {
			return cfg, nil
		}
	}
	return jetstream.StreamConfig{}, fmt.Errorf("stream config: unknown stream %q", name)
}
