package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/tracing"
)

// An execution started through POST /v1/executions is traced from the request on: the start's
// span is the child of the request's traceparent (a root without one), the queued event carries
// its trace context, and the execution's spans and the service's traceparent share its trace.
func TestStartJoinsTheCallersTrace(t *testing.T) {
	var (
		mu    sync.Mutex
		heard []string // the traceparents the service received
	)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		heard = append(heard, r.Header.Get("Traceparent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	t.Cleanup(svc.Close)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(testContext(t)) })
	js, reg, eng := startEngineWith(t, svc, dispatcher.Config{}, func(c *engine.Config) { c.TracerProvider = tp })
	srv := serveAPI(t, api.Config{Registry: reg, Engine: eng, TracerProvider: tp, Logger: testLogger(t)})
	r := do(t, srv, "PUT", "/v1/workflows/w", "id: w\nsteps: [{id: call, type: api_call, service: svc, endpoint: /x}]\n")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)

	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	for _, tc := range []struct {
		name        string
		traceparent string
	}{
		{"the caller's traceparent", "00-" + callerTrace + "-" + callerSpan + "-01"},
		{"no traceparent", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spans.Reset()
			mu.Lock()
			heard = nil
			mu.Unlock()
			req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, srv.URL+"/v1/executions",
				strings.NewReader(`{"workflow_id": "w"}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			if tc.traceparent != "" {
				req.Header.Set("Traceparent", tc.traceparent)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusAccepted, resp.StatusCode)

			// The start's span, ended when the answer was written.
			var start *tracetest.SpanStub
			for _, sp := range spans.GetSpans() {
				if sp.Name == "execution start" {
					start = &sp
				}
			}
			require.NotNil(t, start, "an execution start span")
			assert.Equal(t, trace.SpanKindServer, start.SpanKind)
			id := ""
			for _, kv := range start.Attributes {
				if kv.Key == tracing.ExecutionID {
					id = kv.Value.AsString()
				}
			}
			require.NotEmpty(t, id, "the span names the execution")
			traceID := start.SpanContext.TraceID().String()
			if tc.traceparent != "" {
				assert.Equal(t, callerTrace, traceID)
				assert.Equal(t, callerSpan, start.Parent.SpanID().String(), "the caller's span is the parent")
			} else {
				assert.False(t, start.Parent.IsValid(), "a root span")
			}

			// The queued event carries the start's span.
			msgs, err := stream.Load(testContext(t), js, streams.Executions, "memmie.executions."+id+".queued")
			require.NoError(t, err)
			require.Len(t, msgs, 1)
			assert.Equal(t, "00-"+traceID+"-"+start.SpanContext.SpanID().String()+"-01",
				msgs[0].Header.Get(tracing.HeaderTraceparent))

			require.Eventually(t, func() bool {
				s, err := eng.Execution(testContext(t), id)
				return err == nil && s.Status == execution.StatusCompleted
			}, 60*time.Second, 20*time.Millisecond, "execution %s completes", id)
			mu.Lock()
			require.Len(t, heard, 1)
			assert.Equal(t, traceID, strings.Split(heard[0], "-")[1], "the service's traceparent: %q", heard[0])
			mu.Unlock()

			// The execution's spans end once their handlers settle their messages: poll.
			want := []string{"execution start", "execution input", "step attempt", "HTTP POST"}
			require.Eventually(t, func() bool {
				seen := map[string]bool{}
				for _, sp := range spans.GetSpans() {
					seen[sp.Name] = true
				}
				for _, name := range want {
					if !seen[name] {
						return false
					}
				}
				return true
			}, 60*time.Second, 20*time.Millisecond, "spans %v", want)
			for _, sp := range spans.GetSpans() {
				assert.Equal(t, traceID, sp.SpanContext.TraceID().String(), "span %q", sp.Name)
			}
		})
	}
}

// Without a tracer provider a start records nothing and ignores the request's traceparent:
// the queued event carries none.
func TestStartUntracedWritesNoTraceparent(t *testing.T) {
	js, reg, eng := startEngine(t, nil, dispatcher.Config{})
	srv := serveAPI(t, api.Config{Registry: reg, Engine: eng, Logger: testLogger(t)})
	r := do(t, srv, "PUT", "/v1/workflows/w", "id: w\nsteps: [{id: call, type: api_call, service: svc, endpoint: /x}]\n")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, srv.URL+"/v1/executions", strings.NewReader(`{"workflow_id": "w"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	msgs, err := stream.Load(testContext(t), js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	assert.Empty(t, msgs[0].Header.Get(tracing.HeaderTraceparent))
}
