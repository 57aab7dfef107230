package tracing

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Header keys of the W3C trace context, lower-case as the W3C spec writes them (nats.Header
// keys are case-sensitive).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// ScopeName names memmie's tracer.
const ScopeName = "github.com/memmie/memmie"

// Carrier is a propagation.TextMapCarrier over NATS headers, keeping keys as they are given
// (lower-case for the trace context), where http.Header would canonicalise them.
type Carrier nats.Header

// Get returns the first value of key.
func (c Carrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set sets key to value.
func (c Carrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// propagator is the only propagation memmie speaks: W3C trace context.
var propagator = propagation.TraceContext{}

// Propagator returns the W3C trace context propagator, for HTTP clients.
func Propagator() propagation.TextMapPropagator { return propagator }

// Extract returns ctx with the remote span context of hdr's traceparent, or ctx itself when
// hdr has none.
func Extract(ctx context.Context, hdr nats.Header) context.Context {
	if len(hdr[HeaderTraceparent]) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, Carrier(hdr))
}

// ExtractHTTP returns ctx with the remote span context of an HTTP request's traceparent, or
// ctx itself when it has none.
func ExtractHTTP(ctx context.Context, hdr http.Header) context.Context {
	if hdr.Get(HeaderTraceparent) == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(hdr))
}

// Inject sets the traceparent (and tracestate) of ctx's span on hdr, allocating hdr when nil,
// and returns it. Without a valid span context in ctx it returns hdr untouched.
func Inject(ctx context.Context, hdr nats.Header) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return hdr
	}
	if hdr == nil {
		hdr = nats.Header{}
	}
	propagator.Inject(ctx, Carrier(hdr))
	return hdr
}

// Copy sets the trace context headers of from on to, allocating to when nil, and returns it.
// Without a traceparent in from it returns to untouched.
func Copy(to, from nats.Header) nats.Header {
	tp := from[HeaderTraceparent]
	if len(tp) == 0 {
		return to
	}
	if to == nil {
		to = nats.Header{}
	}
	to[HeaderTraceparent] = tp
	if ts := from[HeaderTracestate]; len(ts) > 0 {
		to[HeaderTracestate] = ts
	}
	return to
}

// Tracer starts memmie's spans. The zero Tracer is off.
type Tracer struct {
	provider trace.TracerProvider
	tracer   trace.Tracer
}

// New returns a Tracer over provider; a nil provider makes it off.
func New(provider trace.TracerProvider) Tracer {
	if provider == nil {
		return Tracer{}
	}
	return Tracer{provider: provider, tracer: provider.Tracer(ScopeName)}
}

// On reports whether spans are recorded and headers written. Call sites test it before
// building span attributes, which would allocate.
func (t Tracer) On() bool { return t.tracer != nil }

// Provider returns the tracer provider, or a no-op one when off.
func (t Tracer) Provider() trace.TracerProvider {
	if t.provider == nil {
		return noop.NewTracerProvider()
	}
	return t.provider
}

// noopSpan is what an off Tracer returns.
var noopSpan = trace.SpanFromContext(context.Background())

// Start starts a span named name, the child of hdr's traceparent when it has one, else of
// ctx's span, else a root. Off, it returns ctx and a no-op span.
func (t Tracer) Start(ctx context.Context, name string, hdr nats.Header, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.tracer == nil {
		return ctx, noopSpan
	}
	return t.tracer.Start(Extract(ctx, hdr), name, opts...)
}
