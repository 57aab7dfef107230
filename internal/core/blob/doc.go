// Package blob is the functional core of blobs: a blob's state is a fold over its deltas, a
// client's blob event becomes the next delta (Decide), and a completed execution's output
// becomes the next deltas (Deltas). It performs no I/O, reads no clock but the now it is given
// and never depends on map order. It must never import NATS, HTTP or Postgres code.
//
// # Using it
//
// The blob writer keeps each blob's state (validated by the sequence of its last delta) and:
//
//	ev, err := blob.Parse(blob.Message{Subject: subj, Body: body, MsgID: msgID})
//	// a *blob.Refusal: dead-letter with its reason, ack
//	dec, err := blob.Decide(state, ev, now)   // a *blob.Refusal: dead-letter
//	// dec.Duplicate: nothing to append; else append dec.Delta on memmie.deltas.<blob_id>
//	// with Nats-Msg-Id dec.Delta.ID, expecting the subject's last sequence; state.Apply(dec.Delta)
//	// then trigger.Match on the state at dec.Version
//
//	res, err := blob.Deltas(state, blob.Execution{...}, now)   // on execution.completed
//	// a *blob.Rejection: the execution shows it, nothing is written
//	// append res.Deltas in order, then publish res.Created
//
// # Rules
//
// Versions count from 1 with no gap: the created event is version 1, of type create; every
// delta takes the next version; nothing follows a delete. Content is any JSON, metadata a JSON
// object, both kept canonical (compact, keys sorted), so that the same deltas give the same
// bytes. JSON Patch operations apply to the document {"content": ..., "metadata": {...}}, under
// /content or /metadata, with evanphx/json-patch (RFC 6902, no negative indices); updated
// events merge metadata with its RFC 7396 merge patch.
//
// Delta ids are deterministic: EventDeltaID for a blob event, ExecutionDeltaID (execution,
// index) for an execution's. The state records every blob event id it holds and how many
// deltas of each execution, so a duplicate is recognised past any duplicate window, and a
// write cut short resumes where it stopped. docs/blobs.md has the whole set of rules.
//
// # Cost
//
// Apply is pure for whoever holds the state before it (a copy by value keeps its version,
// document and records), and it does not copy the records: they are persistent maps, so Apply
// and Clone cost O(log n) in a blob's n deltas, Fold O(n log n) at most (flat per delta in
// BenchmarkFold), plus each delta's pass over the document. The records cost 24 bytes per
// event id or execution (a 128-bit hash of the id and the value), about 24 bytes per delta.
package blob
