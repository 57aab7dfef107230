package blobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/blobs"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// BenchmarkBlobEvents measures how many blob events one process records per second, with
// every partition (one event in flight per partition): 200 blobs, a created event and 19
// updates each, published beforehand. The published events are not timed.
//
//	go test -run '^$' -bench BlobEvents -benchtime 3x ./handlers/blobs/
func BenchmarkBlobEvents(b *testing.B) {
	const blobCount, perBlob = 200, 20
	for range b.N {
		b.StopTimer()
		_, _, js := natstest.Run(b)
		ctx := testContext(b)
		require.NoError(b, stream.EnsureStreams(ctx, js, append(streams.Configs(streams.Options{}), streams.TriggersConfig(streams.Options{}))))
		for i := range perBlob {
			for k := range blobCount {
				kind, body := "updated", fmt.Sprintf(`{"blob_id": "b%d", "content": %d}`, k, i)
				if i == 0 {
					kind = "created"
				}
				msg := nats.NewMsg(fmt.Sprintf("memmie.blobs.b%d.%s", k, kind))
				msg.Data = []byte(body)
				msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("b%d-%d", k, i))
				_, err := js.PublishMsgAsync(msg)
				require.NoError(b, err)
			}
		}
		<-js.PublishAsyncComplete()
		h, err := blobs.New(js, blobs.Config{
			DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
			Logger:     slog.New(slog.DiscardHandler),
			NoOutputs:  true,
		})
		require.NoError(b, err)
		b.StartTimer()
		start := time.Now()
		require.NoError(b, h.Start(ctx))
		require.NoError(b, h.Assign(ctx, allPartitions()))
		for h.Stats().Handled < blobCount*perBlob {
			require.Less(b, time.Since(start), time.Minute, "handled %d", h.Stats().Handled)
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(blobCount*perBlob)/time.Since(start).Seconds(), "events/s")
		b.StopTimer()
		require.NoError(b, h.Stop(context.Background()))
	}
}
