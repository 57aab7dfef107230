package reconciler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/handlers/reconciler"
	"github.com/memmie/memmie/internal/tracing"
)

// TestReissueSpanJoinsTheExecutionTrace: with a tracer, a timer re-issued for an execution
// whose queued event carries a trace context is sent in a reconciler.reissue span of that
// trace; one re-issued for an untraced execution has none.
func TestReissueSpanJoinsTheExecutionTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := testContext(t)
	js := setup(t)
	t0 := time.Now().Add(-time.Minute).UTC()
	newBuilder(t, "traced", fmt.Sprintf(workflowYAML, 1), t0).start(t0).
		appendWith(ctx, js, nats.Header{tracing.HeaderTraceparent: {"00-" + traceID + "-00f067aa0ba902b7-01"}})
	newBuilder(t, "untraced", fmt.Sprintf(workflowYAML, 1), t0).start(t0).appendTo(ctx, js)

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	r, err := reconciler.New(js, reconciler.Config{Grace: time.Second, Logger: testLogger(t), Tracer: tracing.New(tp),
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) }})
	require.NoError(t, err)
	ps, err := r.Pass(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, ps.Reissued, "both lost timeouts are re-issued")

	got := spans.GetSpans()
	require.Len(t, got, 1, "one span: the traced execution's")
	span := got[0]
	assert.Equal(t, "reconciler.reissue", span.Name)
	assert.Equal(t, traceID, span.SpanContext.TraceID().String())
	assert.Equal(t, "00f067aa0ba902b7", span.Parent.SpanID().String())
	assert.Contains(t, span.Attributes, tracing.ExecutionID.String("traced"))
	assert.Contains(t, span.Attributes, tracing.WorkflowID.String("w"))
	assert.Contains(t, span.Attributes, tracing.StepID.String("call"))
}
