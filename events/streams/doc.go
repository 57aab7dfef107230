// Package streams holds the JetStream configuration of memmie's streams, and compares a
// stream's configuration on a server with it (Diff). It is the only part of the vocabulary
// that imports NATS code; it creates nothing itself (internal/jetstream/stream.Ensure does).
//
//	for _, cfg := range streams.Configs(streams.Options{Replicas: 3}) {
//		for _, d := range streams.Diff(onServer[cfg.Name], cfg) {
//			fmt.Println(d) // stream MEMMIE_EXECUTIONS: replicas are 1 on the server, 3 wanted: ...
//		}
//	}
//
// Every stream of the contract keeps everything (limits retention, no age, count or size limit):
// the streams are the source of truth and projections are rebuilt from them. MEMMIE_BLOBS is
// partitioned by blob id (BlobsTransform), as the inbox is by execution id. Configs documents
// each choice. Two internal streams are the exceptions: the orchestrator's inbox (InboxConfig),
// a work queue partitioned by execution id, and the leases through which processes share the
// work (LeasesConfig), whose messages expire.
package streams
