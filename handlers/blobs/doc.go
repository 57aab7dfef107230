// Package blobs is the writer of blob histories. It consumes clients' blob events on
// MEMMIE_BLOBS, records each as the next delta of its blob on memmie.deltas.<blob_id>
// (blob.Decide, appended expecting the subject's last sequence), and then, before it acks the
// event, appends its trigger request on memmie.triggers.<blob_id> (stream MEMMIE_TRIGGERS,
// events.TriggerRequested: the event and the blob after it, under a Nats-Msg-Id derived from
// the event's id), which the trigger matcher (handlers/triggers) turns into starts. An event
// delivered again after a crash between the two finds its delta and asks again. It also
// consumes completed executions: those a blob event triggered write their output's deltas
// (blob.Deltas) and publish the created events of the blobs they derived. A blob event that
// can never apply (a blob.Refusal) is dead-lettered with its reason, and the consumer goes on;
// an output that cannot apply (a blob.Rejection) writes nothing and is sent to the execution's
// inbox as events.DeltasRejected, which the orchestrator records; a transient failure (NATS
// unavailable) is retried.
//
// MEMMIE_BLOBS is partitioned by blob id (streams.BlobsTransform). The handler consumes the
// partitions Assign gives it (the engine gives it the orchestrator's), each through a durable
// consumer pinned to one process and holding one event at a time, so that a blob's events are
// applied in the order they were stored, across processes, retries and crashes:
//
//	h, err := blobs.New(js, blobs.Config{DeadLetter: dl})
//	err = h.Start(ctx)
//	err = h.Assign(ctx, []int{0, 1, 2}) // the MEMMIE_BLOBS partitions this process consumes
//	defer h.Stop(ctx)
//
// It is a thin shell: what is written is decided by internal/core/blob. It never imports
// another handler or the engine, and matches no trigger: the matcher does.
package blobs
