package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/natsserver"
)

// BenchmarkPublishFsync measures what fsync on every write costs, against the server's
// default (a flush every 2 minutes), on the machine's disk. The README's section on
// guarantees quotes the ratio:
//
//	go test ./cmd/memmie -run '^$' -bench PublishFsync -benchtime 20000x
//
// async: publishes in flight at once, as a client that batches (throughput); sync: one
// publish at a time, each waiting for its ack, as the orchestrator's appends do (latency).
func BenchmarkPublishFsync(b *testing.B) {
	payload := make([]byte, 512) // about one small execution event
	for _, sync := range []struct {
		name   string
		always bool
	}{{"default", false}, {"always", true}} {
		for _, mode := range []string{"async", "sync"} {
			b.Run(mode+"/"+sync.name, func(b *testing.B) {
				srv, err := natsserver.Start(natsserver.Config{StoreDir: b.TempDir(), Port: -1, SyncAlways: sync.always})
				require.NoError(b, err)
				defer srv.Shutdown()
				nc, err := nats.Connect(srv.ClientURL())
				require.NoError(b, err)
				defer nc.Close()
				js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
				require.NoError(b, err)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"},
					Storage: jetstream.FileStorage})
				require.NoError(b, err)

				b.SetBytes(int64(len(payload)))
				b.ResetTimer()
				start := time.Now()
				switch mode {
				case "async":
					for i := 0; i < b.N; i++ {
						_, err := js.PublishAsync("bench.x", payload, jetstream.WithStallWait(time.Minute))
						require.NoError(b, err)
					}
					select {
					case <-js.PublishAsyncComplete():
					case <-ctx.Done():
						b.Fatal("async publishes not acknowledged")
					}
				case "sync":
					for i := 0; i < b.N; i++ {
						_, err := js.Publish(ctx, "bench.x", payload)
						require.NoError(b, err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
				info, err := js.Stream(ctx, "BENCH")
				require.NoError(b, err)
				require.Equal(b, uint64(b.N), info.CachedInfo().State.Msgs, "every publish was stored")
			})
		}
	}
}
