// Package stream writes and reads event streams on JetStream: it sets the streams up, appends
// messages with optimistic concurrency, and loads an entity's history.
//
// An append carries an expectation: the sequence of the last message the writer knows on a
// filter subject (one execution's subjects, memmie.executions.<id>.>). Append stores several
// messages as one atomic batch (ADR-50), all or none; AppendChained (below) stores them one
// publish at a time, each expecting the one before:
//
//	ack, err := stream.Append(ctx, js, "MEMMIE_EXECUTIONS", msgs, stream.Expect{
//		FilterSubject:  "memmie.executions." + id + ".>",
//		LastSubjectSeq: lastSeq, // 0: nothing stored on the filter yet
//	})
//	switch {
//	case errors.Is(err, stream.ErrConflict):
//		// another writer got there first: reload the history and decide again
//	case err != nil:
//		// NATS unreachable, timeout, ...: retry the same append later
//	}
//	lastSeq = ack.LastSeq
//
// A retried append that had already landed reports success with Ack.Duplicate set, so a
// writer that lost the ack can simply try again.
//
// Atomic batches are expensive on a replica-1 file stream: the server stages each batch in a
// file store of its own, synced to disk, while holding the stream's lock, so every batch costs
// a few disk syncs and stalls the stream's other writes meanwhile (see BenchmarkAppend).
// AppendChained is the cheap alternative: one publish per message, each expecting the one
// before it, so nothing can interleave, but a crash may leave a prefix stored; calling it again
// completes it.
//
// Reads that decide a write (whether a conflicting append had landed, where a history ends)
// ask the stream leader (LeaderLastBySubject); LastBySubject's direct get, which any replica
// answers, serves reads whose staleness is harmless.
//
// Ensure, at every start, creates the streams that do not exist and never rewrites one that
// does: it compares each with the wanted configuration (streams.Diff), refuses a start on a
// difference a start must not settle (partitions, replicas, storage, a missing capability) and
// logs the others; Update applies them, on an operator's request (`memmie streams update`).
//
// The package knows nothing of executions, and never decides anything: it moves bytes with the
// headers that make concurrent writers safe.
package stream
