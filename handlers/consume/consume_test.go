package consume_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/consume"
	"github.com/memmie/memmie/handlers/deadletter"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/stream"
)

// record notes every delivery the handler sees.
type record struct {
	mu         sync.Mutex
	deliveries map[string][]uint64 // body -> NumDelivered of each delivery
	times      map[string][]time.Time
}

func (r *record) add(d consume.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	body := string(d.Msg.Data())
	r.deliveries[body] = append(r.deliveries[body], d.Meta.NumDelivered)
	r.times[body] = append(r.times[body], time.Now())
}

func (r *record) get(body string) ([]uint64, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.deliveries[body]...), append([]time.Time(nil), r.times[body]...)
}

func TestOutcomes(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dlCfg, err := streams.Config(streams.DeadLetter, streams.Options{Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{dlCfg, {
		Name: "WORK", Subjects: []string{"work.>"}, Storage: jetstream.MemoryStorage,
	}}))

	rec := &record{deliveries: map[string][]uint64{}, times: map[string][]time.Time{}}
	loop, err := consume.New(js, consume.Config{
		Name:         "tester",
		Stream:       "WORK",
		Consumer:     jetstream.ConsumerConfig{Durable: "tester", MaxDeliver: -1, AckWait: 5 * time.Second},
		Workers:      4,
		MaxFailures:  3,
		RetryBackoff: 10 * time.Millisecond,
		DeadLetter:   deadletter.NewWriter(js, deadletter.Config{}),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
	}, func(_ context.Context, d consume.Delivery) consume.Outcome {
		rec.add(d)
		switch string(d.Msg.Data()) {
		case "ok":
			return consume.Ack()
		case "later":
			if d.Meta.NumDelivered == 1 {
				return consume.Hold(300 * time.Millisecond)
			}
			return consume.Ack()
		case "flaky":
			if d.Meta.NumDelivered < 3 {
				return consume.Retry(errors.New("not yet"), 0)
			}
			return consume.Ack()
		case "broken":
			return consume.Retry(errors.New("always broken"), 0)
		case "poison":
			return consume.DeadLetter("cannot read it")
		case "panic":
			panic("boom")
		}
		return consume.Ack()
	})
	require.NoError(t, err)
	require.NoError(t, loop.Start(ctx))
	defer func() { require.NoError(t, loop.Stop(context.Background())) }()

	sent := map[string]time.Time{}
	for _, body := range []string{"ok", "later", "flaky", "broken", "poison", "panic"} {
		sent[body] = time.Now()
		_, err := js.Publish(ctx, "work."+body, []byte(body))
		require.NoError(t, err)
	}

	require.Eventually(t, func() bool {
		msgs, err := stream.Load(ctx, js, streams.DeadLetter, events.SubjectDeadLetter)
		return err == nil && len(msgs) == 3
	}, 20*time.Second, 20*time.Millisecond, "poison, broken and panic are dead-lettered")
	msgs, err := stream.Load(ctx, js, streams.DeadLetter, events.SubjectDeadLetter)
	require.NoError(t, err)
	reasons := map[string]string{}
	for _, m := range msgs {
		assert.Equal(t, "memmie.deadletter.tester", m.Subject)
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		dl := ev.Data.(*events.DeadLetter)
		reasons[string(dl.Data)] = dl.Reason
		assert.Equal(t, "WORK", dl.Stream)
	}
	assert.Equal(t, "cannot read it", reasons["poison"])
	assert.Equal(t, "gave up after 3 deliveries: always broken", reasons["broken"])
	assert.Equal(t, "gave up after 3 deliveries: panic: boom", reasons["panic"])

	require.Eventually(t, func() bool {
		d, _ := rec.get("flaky")
		l, _ := rec.get("later")
		return len(d) == 3 && len(l) == 2
	}, 20*time.Second, 20*time.Millisecond)
	ok, _ := rec.get("ok")
	assert.Equal(t, []uint64{1}, ok)
	poison, _ := rec.get("poison")
	assert.Equal(t, []uint64{1}, poison, "a dead letter is not delivered again")
	later, times := rec.get("later")
	assert.Equal(t, []uint64{1, 2}, later)
	assert.GreaterOrEqual(t, times[1].Sub(times[0]), 300*time.Millisecond, "held for its delay")

	require.Eventually(t, func() bool {
		info, err := js.Consumer(ctx, "WORK", "tester")
		if err != nil {
			return false
		}
		ci, err := info.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 20*time.Second, 20*time.Millisecond, "every message is settled")
}
