package stream_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/stream"
)

// BenchmarkAppend measures one append per op, each expecting the previous one's sequence on
// the same execution, against the plain publishes it replaces. Compare ns/op and ns/msg.
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("expect/%d", n), func(b *testing.B) {
			js, name := newStream(b)
			ctx := context.Background()
			var last uint64
			b.ResetTimer()
			for i := range b.N {
				ack, err := stream.Append(ctx, js, name, events("e1", fmt.Sprint(i), n), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: last})
				if err != nil {
					b.Fatal(err)
				}
				last = ack.LastSeq
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
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
		}
		<-js.PublishAsyncComplete()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
	})
}
