package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// BenchmarkMatcher pushes the same number of trigger requests (one matching provider, a
// workflow without input schema) through the Watermill router (Matcher, on the consume loop
// with its default workers), and through the same
// handler and publisher on memmie's consume loop with 1 and with 8 workers: same stream, same
// server, same run. The requests are appended beforehand and not timed.
//
//	go test -run '^$' -bench Matcher -benchtime 1x ./handlers/triggers/
func BenchmarkMatcher(b *testing.B) {
	const n = 2000
	def, err := definitions.Parse("notes.yaml", []byte(`
provider:
  id: notes
workflows:
  - workflow_id: summarize
    triggers:
      - event: onCreate
`), "")
	require.NoError(b, err)
	providers := []*definitions.Provider{def.(*definitions.Provider)}
	prepare := func(_ context.Context, s trigger.Start) (stream.Msg, error) {
		ev := events.NewExecution(&events.ExecutionQueued{ExecutionID: s.ExecutionID, WorkflowID: s.WorkflowID, Input: s.Input,
			ProviderID: s.ProviderID, BlobID: s.BlobID, SourceEventID: s.SourceEventID, BaseVersion: s.BaseVersion,
			Trigger: s.Trigger}, events.SourceTriggers, time.Now())
		data, err := events.Marshal(ev)
		return stream.Msg{Subject: ev.Subject, Data: data, ID: ev.ID}, err
	}
	for range b.N {
		b.StopTimer()
		_, _, js := natstest.Run(b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cfgs := append(streams.Configs(streams.Options{}), streams.TriggersConfig(streams.Options{}))
		require.NoError(b, stream.EnsureStreams(ctx, js, cfgs))
		log := slog.New(slog.DiscardHandler)
		cfg := Config{Providers: func() []*definitions.Provider { return providers }, Prepare: prepare,
			DeadLetter: deadletter.NewWriter(js, deadletter.Config{}), Logger: log}
		queued := func() uint64 {
			s, err := js.Stream(ctx, streams.Executions)
			require.NoError(b, err)
			info, err := s.Info(ctx)
			require.NoError(b, err)
			return info.State.Msgs
		}
		run := func(name string, start func() (stop func())) {
			before := queued()
			appendRequests(b, ctx, js, name, n)
			b.StartTimer()
			t0 := time.Now()
			stop := start()
			for queued() < before+n {
				require.Less(b, time.Since(t0), 4*time.Minute, "%s: %d of %d queued", name, queued()-before, n)
				time.Sleep(5 * time.Millisecond)
			}
			elapsed := time.Since(t0)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(n)/elapsed.Seconds(), name+"_req/s")
		}

		run("watermill", func() func() {
			m, err := New(js, cfg)
			require.NoError(b, err)
			require.NoError(b, m.Start(ctx))
			return func() {
				require.NoError(b, m.Stop(ctx))
				// A work queue takes one consumer per subject: the next one replaces it.
				require.NoError(b, js.DeleteConsumer(ctx, streams.Triggers, Name))
			}
		})
		for _, workers := range []int{1, 8} {
			run(fmt.Sprintf("consume%d", workers), func() func() {
				m, err := New(js, cfg)
				require.NoError(b, err)
				loop := consumeLoop(b, js, m, workers)
				require.NoError(b, loop.Start(ctx))
				return func() {
					require.NoError(b, loop.Stop(ctx))
					require.NoError(b, js.DeleteConsumer(ctx, streams.Triggers, Name))
				}
			})
		}
		cancel()
	}
}

// consumeLoop runs the matcher's handler and publisher on memmie's consume loop, on the
// matcher's durable consumer.
func consumeLoop(b *testing.B, js jetstream.JetStream, m *Matcher, workers int) *consume.Loop {
	pub := &executions{js: js, log: m.log, n: &m.n}
	cc := m.ConsumerConfig()
	cc.MaxAckPending = max(cc.MaxAckPending, 2*workers)
	loop, err := consume.New(js, consume.Config{
		Name: Name, Stream: m.cfg.Stream, Consumer: cc, Workers: workers,
		DeadLetter: m.cfg.DeadLetter, Logger: m.log,
	}, func(ctx context.Context, d consume.Delivery) consume.Outcome {
		msg, _ := unmarshaler{}.Unmarshal(d.Msg)
		msg.SetContext(ctx)
		out, err := m.handle(msg)
		switch {
		case permanent(err):
			return consume.DeadLetter(err.Error())
		case err != nil:
			return consume.Retry(err, 0)
		}
		if err := pub.Publish(m.cfg.Executions, out...); err != nil {
			return consume.Retry(err, 0)
		}
		return consume.Ack()
	})
	require.NoError(b, err)
	return loop
}

// appendRequests appends n trigger requests of created events, on blobs <prefix>-<i>.
func appendRequests(b *testing.B, ctx context.Context, js jetstream.JetStream, prefix string, n int) {
	for i := range n {
		blobID := fmt.Sprintf("%s-%d", prefix, i)
		subject, err := events.TriggerSubject(blobID)
		require.NoError(b, err)
		id := events.TriggerRequestID(blobID, "ev")
		data, err := events.Marshal(events.Event{ID: id, Source: events.SourceBlobs, Type: events.TypeTriggerRequested,
			Subject: subject, Time: time.Now(), Data: &events.TriggerRequested{EventID: "ev", Kind: events.BlobCreated,
				Event: events.BlobEvent{BlobID: blobID, Content: json.RawMessage(`"hello"`)},
				Blob:  events.BlobSnapshot{BlobID: blobID, Version: 1, Content: json.RawMessage(`"hello"`), Metadata: json.RawMessage(`{}`)}}})
		require.NoError(b, err)
		if _, err := js.PublishAsync(subject, data, jetstream.WithMsgID(id), jetstream.WithExpectStream(streams.Triggers)); err != nil {
			require.NoError(b, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		require.NoError(b, errors.New("requests not published"))
	}
}
