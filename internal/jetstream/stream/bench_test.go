package stream_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/jetstream/stream"
)

// BenchmarkAppend measures one append per op, each expecting the previous one's sequence on
// the same execution, next to the plain publishes it replaces. Compare ns/msg.
func BenchmarkAppend(b *testing.B) {
	memory := func(c *jetstream.StreamConfig) {
		c.Storage = jetstream.MemoryStorage
		c.Compression = jetstream.NoCompression
	}
	cases := []struct {
		name   string
		append appendFunc
		n      int
		mutate []func(*jetstream.StreamConfig)
	}{
		{"atomic/1", stream.Append, 1, nil},
		{"atomic/3", stream.Append, 3, nil},
		{"chained/3", stream.AppendChained, 3, nil},
		{"atomic/3/memory", stream.Append, 3, []func(*jetstream.StreamConfig){memory}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			js, name := newStream(b, c.mutate...)
			ctx := context.Background()
			var last uint64
			b.ResetTimer()
			for i := range b.N {
				ack, err := c.append(ctx, js, name, events("e1", fmt.Sprint(i), c.n), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last})
				if err != nil {
					b.Fatal(err)
				}
				last = ack.LastSeq
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*c.n), "ns/msg")
		})
	}
	b.Run("publish/sync", func(b *testing.B) {
		js, _ := newStream(b)
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			if _, err := js.Publish(ctx, "memmie.executions.e1.x", []byte(`{"i":1}`), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
	})
	b.Run("publish/async", func(b *testing.B) {
		js, _ := newStream(b)
		b.ResetTimer()
		for i := range b.N {
			if _, err := js.PublishAsync("memmie.executions.e1.x", []byte(`{"i":1}`), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
				b.Fatal(err)
			}
			// Bound what is in flight, so that a slow disk stalls the loop instead of failing it.
			if i%512 == 511 {
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
	})
}

// BenchmarkAppendParallel runs appends from several goroutines, each on its own execution, as
// an orchestrator handling many executions does: the stream's throughput, not one latency.
func BenchmarkAppendParallel(b *testing.B) {
	cases := []struct {
		name   string
		append appendFunc
		n      int
	}{
		{"atomic/1", stream.Append, 1},
		{"atomic/3", stream.Append, 3},
		{"chained/3", stream.AppendChained, 3},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			js, name := newStream(b)
			var writer atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := fmt.Sprintf("p%d", writer.Add(1))
				var last uint64
				for i := 0; pb.Next(); i++ {
					ack, err := c.append(context.Background(), js, name, events(id, fmt.Sprint(i), c.n), stream.Expect{FilterSubject: filter(id), LastSubjectSeq: last})
					if err != nil {
						b.Error(err)
						return
					}
					last = ack.LastSeq
				}
			})
		})
	}
}
