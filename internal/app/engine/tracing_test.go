package engine_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/logbuf"
	"github.com/memmie/memmie/internal/tracing"
)

// The client's trace: a traceparent with a known trace id, as an instrumented client sends.
const (
	clientTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientTraceparent = "00-" + clientTraceID + "-00f067aa0ba902b7-01"
)

// TestTraceFromBlobEventToDelta publishes a blob event carrying a traceparent: its trigger,
// its execution's step call and the deltas the execution writes are all in the client's
// trace. The service receives the traceparent, the deltas' messages carry it, and the spans
// exported (blob event, trigger request, step attempt, HTTP call, deltas) share its trace id.
func TestTraceFromBlobEventToDelta(t *testing.T) {
	svc := newService(t, reply(200, map[string]any{"summary": "traced"}))
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(testContext(t)) })
	var logs logbuf.Buffer
	h := newHarness(t, map[string]string{"svc": svc.URL}, func(c *engine.Config) {
		c.TracerProvider = tp
		c.Logger = slog.New(tracing.NewLogHandler(slog.NewJSONHandler(&logs, nil)))
	})
	h.register(`
provider:
  id: tracer
workflows:
  - workflow_id: summarize
    triggers:
      - event: onCreate
`, `
id: summarize
steps:
  - id: call
    type: api_call
    service: svc
    endpoint: /summarize
    input_map: {content: $.input.content}
output_map:
  delta_operations:
    - {op: add, path: /metadata/summary, value: $.steps.call.output.summary}
`)

	msg := nats.NewMsg("memmie.blobs." + noteBlob + ".created")
	msg.Data = []byte(`{"blob_id": "` + noteBlob + `", "user_id": "` + noteUser + `", "content": "# Notes", "metadata": {}}`)
	msg.Header.Set(jetstream.MsgIDHeader, "traced-1")
	msg.Header[tracing.HeaderTraceparent] = []string{clientTraceparent}
	_, err := h.js.PublishMsg(testContext(t), msg)
	require.NoError(t, err)

	id := trigger.ExecutionID(noteBlob, "traced-1", "tracer", "summarize")
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status, "error: %+v", s.Error)
	blobDeltas(t, h.js, noteBlob, 2)

	calls := svc.Calls()
	require.Len(t, calls, 1)
	assert.Equal(t, clientTraceID, traceIDOf(calls[0].Headers["Traceparent"]), "the service's traceparent")

	msgs, err := stream.Load(testContext(t), h.js, streams.Deltas, "memmie.deltas."+noteBlob)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	for i, m := range msgs {
		assert.Equal(t, clientTraceID, traceIDOf(m.Header.Get(tracing.HeaderTraceparent)), "delta %d's traceparent", i+1)
	}

	// A handler's span ends once it settled its message: poll for the last ones.
	want := []string{"blob event", "trigger request", "execution input", "step attempt", "HTTP POST", "execution deltas"}
	seen := map[string]bool{}
	require.Eventually(t, func() bool {
		clear(seen)
		for _, sp := range spans.GetSpans() {
			seen[sp.Name] = true
		}
		for _, name := range want {
			if !seen[name] {
				return false
			}
		}
		return true
	}, waitFor, 20*time.Millisecond, "spans %v", want)
	for _, sp := range spans.GetSpans() {
		assert.Equal(t, clientTraceID, sp.SpanContext.TraceID().String(), "span %q", sp.Name)
	}

	// The trigger's log line names the trace.
	var queued map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "execution queued" {
			queued = rec
		}
	}
	require.NotNil(t, queued, "an execution queued line in:\n%s", logs.String())
	assert.Equal(t, clientTraceID, queued["trace_id"])
}

// traceIDOf returns the trace id of a traceparent (version-traceid-spanid-flags).
func traceIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}
