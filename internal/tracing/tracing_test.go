package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/internal/tracing"
)

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestCarrierKeepsLowerCaseKeys(t *testing.T) {
	ctx := tracing.Extract(context.Background(), nats.Header{"traceparent": {traceparent}})
	sc := trace.SpanContextFromContext(ctx)
	require.True(t, sc.IsValid())
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	assert.True(t, sc.IsRemote())

	hdr := tracing.Inject(ctx, nil)
	assert.Equal(t, nats.Header{"traceparent": {traceparent}}, hdr, "lower-case, not Traceparent")

	// A canonicalised key is not the W3C one.
	assert.False(t, trace.SpanContextFromContext(tracing.Extract(context.Background(),
		nats.Header{"Traceparent": {traceparent}})).IsValid())
}

func TestInjectWithoutSpanAddsNothing(t *testing.T) {
	assert.Nil(t, tracing.Inject(context.Background(), nil))
	hdr := nats.Header{"a": {"b"}}
	assert.Equal(t, nats.Header{"a": {"b"}}, tracing.Inject(context.Background(), hdr))
}

func TestOffTracerStartsNoSpan(t *testing.T) {
	var off tracing.Tracer
	assert.False(t, off.On())
	ctx, span := off.Start(context.Background(), "x", nats.Header{"traceparent": {traceparent}})
	assert.False(t, span.SpanContext().IsValid())
	assert.Nil(t, tracing.Inject(ctx, nil), "off: no header written")
	allocs := testing.AllocsPerRun(100, func() {
		ctx, span := off.Start(context.Background(), "x", nil)
		span.End()
		_ = tracing.Inject(ctx, nil)
	})
	assert.Zero(t, allocs)
}

func TestTracerContinuesTheHeadersTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	tr := tracing.New(tp)
	ctx, span := tr.Start(context.Background(), "child", nats.Header{"traceparent": {traceparent}})
	span.End()
	got := spans.GetSpans()
	require.Len(t, got, 1)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", got[0].SpanContext.TraceID().String())
	assert.Equal(t, "00f067aa0ba902b7", got[0].Parent.SpanID().String())
	hdr := tracing.Inject(ctx, nil)
	assert.Contains(t, hdr.Get("traceparent"), got[0].SpanContext.SpanID().String(), "the child's span id travels on")
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	ctx := tracing.Extract(context.Background(), nats.Header{"traceparent": {traceparent}})
	log.InfoContext(ctx, "with a span")
	log.InfoContext(context.Background(), "without")

	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	require.Len(t, lines, 2)
	var with, without map[string]any
	require.NoError(t, json.Unmarshal(lines[0], &with))
	require.NoError(t, json.Unmarshal(lines[1], &without))
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", with["trace_id"])
	assert.Equal(t, "00f067aa0ba902b7", with["span_id"])
	assert.Equal(t, "test", with["component"])
	assert.NotContains(t, without, "trace_id")
}

func TestExportPostsToV1Traces(t *testing.T) {
	for _, suffix := range []string{"", "/", "/v1/traces"} {
		var paths []string
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			paths = append(paths, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}))
		tp, err := tracing.Export(context.Background(), srv.URL+suffix)
		require.NoError(t, err)
		_, span := tp.Tracer("test").Start(context.Background(), "span")
		span.End()
		require.NoError(t, tp.Shutdown(context.Background()), "the shutdown sends the batch")
		srv.Close()
		assert.Equal(t, []string{"POST /v1/traces"}, paths, "endpoint %q", srv.URL+suffix)
	}
	_, err := tracing.Export(context.Background(), "localhost:4318")
	assert.Error(t, err, "no scheme")
}
