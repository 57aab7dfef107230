package timers_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/handlers/timers"
	"github.com/memmie/memmie/internal/tracing"
)

// TestFireSpanJoinsTheExecutionTrace: with a tracer, a timer set by an event that carries a
// trace context is fired in a timer.fire span of that trace, with the timer's attributes; a
// timer set by an event without one has no span.
func TestFireSpanJoinsTheExecutionTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	f := newFixture(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f.start(t, timers.Config{Tracer: tracing.New(tp)})

	ref := events.AttemptRef{Run: 1, StepID: "charge", Attempt: 1}
	f.appendWith(t, nats.Header{tracing.HeaderTraceparent: {"00-" + traceID + "-00f067aa0ba902b7-01"}},
		&events.StepRetryScheduled{ExecutionID: "traced", AttemptRef: ref, NextAttempt: 2, DueAt: time.Now()})
	f.append(t, &events.StepRetryScheduled{ExecutionID: "untraced", AttemptRef: ref, NextAttempt: 2, DueAt: time.Now()})
	require.Eventually(t, func() bool { return len(f.fired(t)) == 2 }, waitFor, 10*time.Millisecond, "both timers fired")

	got := spans.GetSpans()
	require.Len(t, got, 1, "one span: the traced timer's")
	span := got[0]
	assert.Equal(t, "timer.fire", span.Name)
	assert.Equal(t, traceID, span.SpanContext.TraceID().String())
	assert.Equal(t, "00f067aa0ba902b7", span.Parent.SpanID().String())
	for _, kv := range []attribute.KeyValue{tracing.ExecutionID.String("traced"), tracing.StepID.String("charge"),
		tracing.Attempt.Int(2), attribute.String("memmie.timer", string(events.TimerStepRetry))} {
		assert.Contains(t, span.Attributes, kv)
	}
}
