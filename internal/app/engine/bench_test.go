package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
)

// BenchmarkExecutions3Steps measures executions per second of a workflow of three api_call
// steps against an in-process HTTP service, from Start to execution.completed, with the
// handlers of one process. The raw JetStream async publish rate, measured on the same server
// in the same run, is the baseline: a 3-step execution appends 12 events, and goes through 4
// inbox commands and 1 timer (its run's deadline, purged at its end; attempts' deadlines are
// the runner's). The messages stored per execution on MEMMIE_INBOX and MEMMIE_EXECUTIONS are
// reported too ("stored": stream sequences used; "held": still stored at the end).
func BenchmarkExecutions3Steps(b *testing.B) { benchExecutions3Steps(b) }

// BenchmarkReportPath runs BenchmarkExecutions3Steps with the runner's reports published to
// the inbox, as before the hand-over, and handed over to the orchestrator in the process, one
// after the other in the same run (go test -bench ReportPath -count 5): the comparison of the
// two on one machine at one time.
func BenchmarkReportPath(b *testing.B) {
	b.Run("inbox", func(b *testing.B) {
		benchExecutions3Steps(b, func(c *engine.Config) { c.Runner.Local = inboxOnly{} })
	})
	b.Run("in-process", func(b *testing.B) { benchExecutions3Steps(b) })
}

// inboxOnly takes no report: the runner publishes every one to the inbox.
type inboxOnly struct{}

func (inboxOnly) Record(context.Context, string, []byte) error {
	return errors.New("reports go to the inbox")
}

func benchExecutions3Steps(b *testing.B, opts ...option) {
	svc := newService(b, reply(200, map[string]any{"ok": true}))
	h := newHarness(b, map[string]string{"svc": svc.URL}, append([]option{func(c *engine.Config) {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		c.Dispatcher.MaxRunning = 1000
	}}, opts...)...)
	h.register(`
id: three_steps
steps:
  - {id: one, type: api_call, service: svc, endpoint: /one, input_map: {n: $.input.n}}
  - {id: two, type: api_call, service: svc, endpoint: /two, input_map: {prev: $.steps.one.output.ok}}
  - {id: three, type: api_call, service: svc, endpoint: /three, input_map: {prev: $.steps.two.output.ok}}
`)
	ctx := context.Background()

	var ended atomic.Int64
	done := make(chan struct{}, 1)
	var target atomic.Int64
	sub, err := h.nc.Subscribe("memmie.executions.*.completed", func(*nats.Msg) {
		if ended.Add(1) == target.Load() {
			done <- struct{}{}
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	failed, err := h.nc.Subscribe("memmie.executions.*.failed", func(m *nats.Msg) { b.Errorf("an execution failed: %s", m.Data) })
	require.NoError(b, err)
	defer failed.Unsubscribe()

	seqs := map[string]uint64{}
	for _, name := range []string{streams.Inbox, streams.Executions} {
		seqs[name] = lastSeq(b, h.js, name)
	}
	ended.Store(0)
	target.Store(int64(b.N))
	const starters = 8
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += starters {
				_, _, err := h.eng.Start(ctx, engine.StartRequest{WorkflowID: "three_steps", Input: []byte(fmt.Sprintf(`{"n": %d}`, i))})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d executions completed", ended.Load(), b.N)
	}
	elapsed := b.Elapsed()
	b.StopTimer()
	// The process holds the NATS server too: this is the CPU of the whole stack.
	cpu := processCPU(b) - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "executions/s")
	b.ReportMetric(cpu.Seconds()*1e3/float64(b.N), "cpu-ms/execution")
	b.ReportMetric(0, "ns/op")
	for name, before := range seqs {
		s, err := h.js.Stream(ctx, name)
		require.NoError(b, err)
		info, err := s.Info(ctx)
		require.NoError(b, err)
		b.ReportMetric(float64(info.State.LastSeq-before)/float64(b.N), name+"-stored/exec")
		b.ReportMetric(float64(info.State.Msgs)/float64(b.N), name+"-held/exec")
	}

	b.ReportMetric(asyncPublishRate(b, h.js, 20_000), "js-async-publish/s")
}

// processCPU returns the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func lastSeq(b *testing.B, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(context.Background(), name)
	require.NoError(b, err)
	info, err := s.Info(context.Background())
	require.NoError(b, err)
	return info.State.LastSeq
}

// asyncPublishRate publishes n small messages with PublishAsync to a file stream like
// MEMMIE_EXECUTIONS and returns messages per second.
func asyncPublishRate(b *testing.B, js jetstream.JetStream, n int) float64 {
	ctx := context.Background()
	cfg, err := streams.Config(streams.Executions, streams.Options{})
	require.NoError(b, err)
	cfg.Name, cfg.Subjects = "BENCH_BASELINE", []string{"bench.baseline.>"}
	_, err = js.CreateOrUpdateStream(ctx, cfg)
	require.NoError(b, err)
	defer func() { _ = js.DeleteStream(ctx, cfg.Name) }()
	payload := []byte(`{"specversion":"1.0","id":"x","source":"/bench","type":"bench","data":{"ok":true}}`)
	start := time.Now()
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("bench.baseline.%d.x", i%1000), payload, jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
		if i%512 == 511 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkProcesses measures executions per second of a two-step workflow with one and with
// two processes sharing the work on one server (go test -bench Processes -benchtime 1000x).
// On one machine the processes share its cores, so this shows the cost of sharing (OCC
// conflicts, partition pins) more than a gain.
func BenchmarkProcesses(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			svc := newService(b, reply(200, map[string]any{"ok": true}))
			c := newCluster(b, map[string]string{"svc": svc.URL}, func(c *engine.Config) {
				c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
				c.Dispatcher.MaxRunning = 1000
			})
			var procs []*proc
			for i := range n {
				procs = append(procs, c.start(fmt.Sprintf("p%d", i+1), nil))
			}
			c.register(procs, twoSteps)
			require.Eventually(b, func() bool {
				total := 0
				for _, p := range procs {
					total += len(p.eng.Stats().Orchestrator.Partitions)
				}
				return total == streams.DefaultPartitions
			}, waitFor, 10*time.Millisecond)

			b.ResetTimer()
			startMany(b, procs, "two_steps", b.N)
			c.waitEnded(b.N, 5*time.Minute)
			elapsed := b.Elapsed()
			b.StopTimer()
			_, conflicts, _, _, _ := sumStats(procs...)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "executions/s")
			b.ReportMetric(float64(conflicts), "conflicts")
			b.ReportMetric(0, "ns/op")
		})
	}
}
