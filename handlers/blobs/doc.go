// Package blobs is the writer of blob histories: it consumes clients' blob events on
// MEMMIE_BLOBS, records each as the next delta of its blob on memmie.deltas.<blob_id>
// (blob.Decide, appended expecting the subject's last sequence), and starts the executions
// the providers' triggers ask for (trigger.Match) through an injected Config.Start. A blob
// event that can never apply (blob.Refusal) is dead-lettered with its reason, and the
// consumer goes on; a transient failure (NATS unavailable) is retried.
//
// It is a thin shell: what a blob event writes and starts is decided by internal/core/blob
// and internal/core/trigger. It never imports another handler or the engine: the engine
// gives it the active providers and a function that queues an execution.
package blobs
