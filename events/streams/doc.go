// Package streams holds the JetStream configuration of memmie's streams. It is the only part of
// the vocabulary that imports NATS code; it creates nothing itself.
//
//	for _, cfg := range streams.Configs(streams.Options{Replicas: 3}) {
//		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil { ... }
//	}
//
// Every stream of the contract keeps everything (limits retention, no age, count or size limit):
// the streams are the source of truth and projections are rebuilt from them. Configs documents
// each choice. Two internal streams are the exceptions: the orchestrator's inbox (InboxConfig),
// a work queue partitioned by execution id, and the leases through which processes share the
// work (LeasesConfig), whose messages expire.
package streams
