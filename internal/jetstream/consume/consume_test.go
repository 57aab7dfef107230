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
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
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

// One loop consumes several consumers with the same workers; a consumer removed while its
// messages flow stops being pulled, and what it had pulled but not started goes back to the
// server, for whoever consumes it next.
func TestAddAndRemoveConsumers(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dlCfg, err := streams.Config(streams.DeadLetter, streams.Options{Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{dlCfg, {
		Name: "PARTS", Subjects: []string{"parts.>"}, Storage: jetstream.MemoryStorage, Retention: jetstream.WorkQueuePolicy,
	}}))
	consumer := func(p string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{Durable: "part-" + p, FilterSubject: "parts." + p + ".*", AckWait: 5 * time.Second}
	}

	var mu sync.Mutex
	seen := map[string]int{} // subject -> times handled
	release, slowStarted := make(chan struct{}), make(chan struct{})
	loop, err := consume.New(js, consume.Config{
		Name: "parts", Stream: "PARTS", Workers: 2,
		Key:        func(m jetstream.Msg) string { return m.Subject() },
		DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
	}, func(_ context.Context, d consume.Delivery) consume.Outcome {
		if d.Msg.Subject() == "parts.b.slow" {
			close(slowStarted)
			<-release
		}
		mu.Lock()
		seen[d.Msg.Subject()]++
		mu.Unlock()
		return consume.Ack()
	})
	require.NoError(t, err)
	require.NoError(t, loop.Start(ctx), "a loop without a consumer starts its workers only")
	defer func() { require.NoError(t, loop.Stop(context.Background())) }()
	require.NoError(t, loop.Add(ctx, consumer("a")))
	require.NoError(t, loop.Add(ctx, consumer("b")))
	assert.Error(t, loop.Add(ctx, consumer("a")), "a consumer is added once")
	assert.Equal(t, []string{"part-a", "part-b"}, loop.Consumers())

	handled := func(subject string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[subject]
	}
	for _, s := range []string{"parts.a.1", "parts.b.1", "parts.b.slow"} {
		_, err := js.Publish(ctx, s, nil)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return handled("parts.a.1") == 1 && handled("parts.b.1") == 1 }, 10*time.Second, 10*time.Millisecond)
	select {
	case <-slowStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow message did not reach the handler")
	}

	// Removing b waits for its message in progress.
	removed := make(chan error, 1)
	go func() { removed <- loop.Remove(ctx, "part-b") }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned while a message was in progress: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-removed)
	assert.Equal(t, 1, handled("parts.b.slow"))
	assert.Equal(t, []string{"part-a"}, loop.Consumers())
	require.NoError(t, loop.Remove(ctx, "part-b"), "removing twice does nothing")

	// b's new messages wait on the server; a's flow on.
	_, err = js.Publish(ctx, "parts.b.2", nil)
	require.NoError(t, err)
	_, err = js.Publish(ctx, "parts.a.2", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return handled("parts.a.2") == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, handled("parts.b.2"))
	require.NoError(t, loop.Add(ctx, consumer("b")), "a removed consumer can come back")
	require.Eventually(t, func() bool { return handled("parts.b.2") == 1 }, 10*time.Second, 10*time.Millisecond)
}

// An abandoned message is left unsettled: the server delivers it again after AckWait.
func TestAbandon(t *testing.T) {
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
		Name: "tester", Stream: "WORK", Workers: 1,
		Consumer:   jetstream.ConsumerConfig{Durable: "tester", MaxDeliver: -1, AckWait: time.Second},
		DeadLetter: deadletter.NewWriter(js, deadletter.Config{}),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
	}, func(_ context.Context, d consume.Delivery) consume.Outcome {
		rec.add(d)
		if d.Meta.NumDelivered == 1 {
			return consume.Abandon()
		}
		return consume.Ack()
	})
	require.NoError(t, err)
	require.NoError(t, loop.Start(ctx))
	defer func() { require.NoError(t, loop.Stop(context.Background())) }()
	_, err = js.Publish(ctx, "work.x", []byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { d, _ := rec.get("x"); return len(d) == 2 }, 10*time.Second, 10*time.Millisecond)
	d, times := rec.get("x")
	assert.Equal(t, []uint64{1, 2}, d)
	assert.GreaterOrEqual(t, times[1].Sub(times[0]), 900*time.Millisecond, "redelivered after AckWait, not at once")
	assert.Equal(t, "abandon", consume.Abandon().String())
}
