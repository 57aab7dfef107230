package dispatcher_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
)

// BenchmarkStarts measures one admission round: 1,000 executions wait in the queue of a
// dispatcher that stands by; it takes the lease and sends their 1,000 starts. An op is one
// round, from the lease to the last start stored in the inbox.
func BenchmarkStarts(b *testing.B) {
	const n = 1000
	js := setup(b)
	l := newLeader() // not held: the queue fills, nothing is admitted
	d := startDispatcher(b, js, dispatcher.Config{Leader: l, MaxRunning: n, Logger: slog.New(slog.DiscardHandler)})
	inbox, err := js.Stream(testContext(b), streams.Inbox)
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for round := range b.N {
		b.StopTimer()
		queued := make([]events.ExecutionData, n)
		for i := range queued {
			queued[i] = &events.ExecutionQueued{ExecutionID: fmt.Sprintf("r%d-%d", round, i), WorkflowID: "wf"}
		}
		appendMany(b, js, queued...)
		require.Eventually(b, func() bool { return len(d.Queue()) == n }, waitFor, time.Millisecond)
		b.StartTimer()

		l.set(time.Now().Add(time.Hour))
		waitInbox(b, inbox, n)

		b.StopTimer()
		// The round's executions end, the inbox is emptied, and the dispatcher stands by.
		ended := make([]events.ExecutionData, n)
		for i := range ended {
			ended[i] = &events.ExecutionCancelled{ExecutionID: fmt.Sprintf("r%d-%d", round, i), Run: 1}
		}
		l.set(time.Time{})
		require.Eventually(b, func() bool { return !d.Leading() }, waitFor, time.Millisecond)
		appendMany(b, js, ended...)
		require.Eventually(b, func() bool { return d.Running() == 0 }, waitFor, time.Millisecond)
		require.NoError(b, inbox.Purge(testContext(b)))
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "starts/s")
}

// waitInbox waits until the inbox holds n messages.
func waitInbox(b *testing.B, s jetstream.Stream, n uint64) {
	b.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		info, err := s.Info(testContext(b))
		require.NoError(b, err)
		if info.State.Msgs >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d starts in the inbox", info.State.Msgs, n)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
