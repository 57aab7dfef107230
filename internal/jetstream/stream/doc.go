// Package stream writes and reads event streams on JetStream: it creates the streams, appends
// messages with optimistic concurrency, and loads an entity's history.
//
// An append carries an expectation: the sequence of the last message the writer knows on a
// filter subject (one execution's subjects, memmie.executions.<id>.>). Several messages are
// appended as one atomic batch (ADR-50), so an input event and the events decided from it are
// stored together or not at all:
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
// The package knows nothing of events or executions, and never decides anything: it moves
// bytes with the headers that make concurrent writers safe.
package stream
