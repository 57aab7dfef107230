package timers_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/timers"
)

// BenchmarkRunDeadlines measures what the timers handler does for the deadlines of runs that
// end in time: b.N runs started (a deadline an hour off) and completed are stored, then the
// handler starts and settles every event it reads. An op is one run. The wall time includes
// ScheduleAfter (2 s), for which started events may wait; cpu-ms/run is the process's CPU
// (the server's included) over the number of runs.
func BenchmarkRunDeadlines(b *testing.B) {
	f := newFixture(b)
	now := time.Now()
	for i := range b.N {
		id := fmt.Sprintf("e%d", i)
		f.publishAsync(b, &events.ExecutionStarted{ExecutionID: id, Run: 1, Deadline: now.Add(time.Hour)})
		f.publishAsync(b, &events.ExecutionCompleted{ExecutionID: id, Run: 1})
	}
	select {
	case <-f.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publishes did not complete")
	}
	inbox, err := f.js.Stream(testContext(b), streams.Inbox)
	require.NoError(b, err)
	before, err := inbox.Info(testContext(b))
	require.NoError(b, err)
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	f.start(b, timers.Config{ScheduleAfter: 2 * time.Second})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ci := f.consumer(b)
		if ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("timers not settled: %d pending, %d held", ci.NumPending, ci.NumAckPending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric((processCPU()-cpu0).Seconds()*1e3/float64(b.N), "cpu-ms/run")
	after, err := inbox.Info(testContext(b))
	require.NoError(b, err)
	b.ReportMetric(float64(after.State.LastSeq-before.State.LastSeq)/float64(b.N), "inbox-stored/run")
}

// publishAsync stores an execution event without waiting for its ack, waiting for the acks
// every 256.
func (f *fixture) publishAsync(b *testing.B, d events.ExecutionData) {
	ev := events.NewExecution(d, events.SourceCore, time.Now())
	data, err := events.Marshal(ev)
	require.NoError(b, err)
	subject, err := events.ExecutionSubject(ev.ExecutionID(), ev.Type)
	require.NoError(b, err)
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if f.js.PublishAsyncPending() >= 256 {
		<-f.js.PublishAsyncComplete()
	}
	_, err = f.js.PublishMsgAsync(msg, jetstream.WithExpectStream(streams.Executions))
	require.NoError(b, err)
}

// processCPU returns the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
