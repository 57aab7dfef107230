package engine_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/tracing"
)

// BenchmarkTracingCost measures what tracing costs an execution: the workflow of
// BenchmarkExecutions3Steps runs on two engines, one without a tracer provider and one with
// an SDK provider that samples every trace and exports, in batches, to an exporter that
// drops them; each of the second's executions is started under a span, as POST
// /v1/executions starts it, so that all of its spans are recorded. Each iteration runs
// tracedRound executions on each engine, one after the other, and the CPU time of the
// process (the NATS server's included) and its allocations are counted for each; the
// ratios are on over off, measured in the same run.
//
//	go test -run '^$' -bench TracingCost -benchtime 5x ./internal/app/engine/
func BenchmarkTracingCost(b *testing.B) {
	const tracedRound = 300
	svc := newService(b, reply(200, map[string]any{"ok": true}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	quiet := func(c *engine.Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		c.Dispatcher.MaxRunning = 1000
	}
	off := newHarness(b, map[string]string{"svc": svc.URL}, quiet)
	on := newHarness(b, map[string]string{"svc": svc.URL}, quiet, func(c *engine.Config) { c.TracerProvider = tp })
	const workflow = `
id: three_steps
steps:
  - {id: one, type: api_call, service: svc, endpoint: /one, input_map: {n: $.input.n}}
  - {id: two, type: api_call, service: svc, endpoint: /two, input_map: {prev: $.steps.one.output.ok}}
  - {id: three, type: api_call, service: svc, endpoint: /three, input_map: {prev: $.steps.two.output.ok}}
`
	off.register(workflow)
	on.register(workflow)
	tracer := tracing.New(tp)

	type cost struct {
		cpu    time.Duration
		allocs uint64
		n      int
	}
	var costs [2]cost // off, on
	for b.Loop() {
		for i, h := range []*harness{off, on} {
			traced := h == on
			cpu0, allocs0 := processCPU(b), mallocs()
			runExecutions(b, h, tracedRound, func(ctx context.Context, n int) error {
				if traced {
					var end func()
					ctx, end = startSpan(ctx, tracer)
					defer end()
				}
				_, _, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "three_steps", Input: []byte(fmt.Sprintf(`{"n": %d}`, n))})
				return err
			})
			costs[i].cpu += processCPU(b) - cpu0
			costs[i].allocs += mallocs() - allocs0
			costs[i].n += tracedRound
		}
	}
	perExec := func(c cost) (ms, allocs float64) {
		return c.cpu.Seconds() * 1e3 / float64(c.n), float64(c.allocs) / float64(c.n)
	}
	offMS, offAllocs := perExec(costs[0])
	onMS, onAllocs := perExec(costs[1])
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(offMS, "off-cpu-ms/exec")
	b.ReportMetric(onMS, "on-cpu-ms/exec")
	b.ReportMetric(onMS/offMS, "cpu-ratio")
	b.ReportMetric(offAllocs, "off-allocs/exec")
	b.ReportMetric(onAllocs, "on-allocs/exec")
	b.ReportMetric(onAllocs/offAllocs, "allocs-ratio")
}

// startSpan starts the span an API start would, and returns its end.
func startSpan(ctx context.Context, tracer tracing.Tracer) (context.Context, func()) {
	ctx, span := tracer.Start(ctx, "execution start", nil)
	return ctx, func() { span.End() }
}

// runExecutions starts n executions with start, eight at a time, and waits until all of them
// completed.
func runExecutions(b *testing.B, h *harness, n int, start func(ctx context.Context, i int) error) {
	b.Helper()
	var completed atomic.Int64
	done := make(chan struct{})
	sub, err := h.nc.Subscribe("memmie.executions.*.completed", func(*nats.Msg) {
		if completed.Add(1) == int64(n) {
			close(done)
		}
	})
	require.NoError(b, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(b, h.nc.Flush())
	const starters = 8
	var wg sync.WaitGroup
	for g := range starters {
		wg.Go(func() {
			for i := g; i < n; i += starters {
				if err := start(context.Background(), i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d executions completed", completed.Load(), n)
	}
}

// mallocs is the count of heap allocations the process has made.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}
