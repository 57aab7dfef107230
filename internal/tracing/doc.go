// Package tracing carries W3C trace context (traceparent, tracestate) in NATS headers, starts
// the spans of memmie's handlers, and adds trace ids to slog records.
//
// Tracing is off unless a Tracer is built over a TracerProvider: an off Tracer starts no span,
// reads and writes no header and allocates nothing, so the handlers call it unconditionally.
// The package never sets OpenTelemetry's global provider or propagator: each engine is given
// its own, so that tests stay independent.
//
//	tr := tracing.New(provider)             // tracing.Tracer{} is off
//	ctx, span := tr.Start(ctx, "blob event", msg.Headers())
//	defer span.End()
//	hdr = tracing.Inject(ctx, hdr)          // adds traceparent when ctx has a span
package tracing
