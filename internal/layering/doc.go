// Package layering holds no code: its tests enforce the direction of memmie's dependencies
// (see STYLE's "Dependencies point one way"), with `go list` over the real packages. From the
// bottom up:
//
//   - events is the vocabulary: it imports nothing of memmie and no NATS or HTTP code
//     (events/streams, the stream configs, imports events).
//   - definitions (with definitions/eval) imports events at most.
//   - internal/core/... are the pure cores (executions, blobs, triggers): no NATS, HTTP or Postgres
//     code, and of memmie only events and definitions.
//   - internal/jetstream/... is the JetStream plumbing that handlers share (appends and reads,
//     consume loops, the inbox, dead letters, leases), with internal/faults: it knows no core,
//     handler or composition root.
//   - handlers/... holds only handlers; each uses the layers below and never another handler.
//   - projections/... folds the streams into Postgres: it uses the layers below, like the
//     handlers, and knows neither a handler nor the composition root; no handler knows it.
//   - internal/app/... is the composition root (the engine that wires the handlers, the HTTP
//     API): above the handlers, below the CLI.
//   - cmd/memmie owns flags and config and wires everything.
package layering
