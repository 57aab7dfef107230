package reconciler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/events"
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
	for _, id := range []string{"traced", "untraced"} {
		b := newBuilder(t, id, fmt.Sprintf(workflowYAML, 1), t0).start(t0)
		for i, ev := range b.history {
			data, err := events.Marshal(ev)
			require.NoError(t, err)
			msg := nats.NewMsg(ev.Subject)
			msg.Data = data
			msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
			if i == 0 && id == "traced" {
				msg.Header.Set(tracing.HeaderTraceparent, "00-"+traceID+"-00f067aa0ba902b7-01")
			}
			_, err = js.PublishMsg(ctx, msg)
			require.NoError(t, err)
		}
	}

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
