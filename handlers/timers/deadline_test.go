package timers_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/timers"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

const waitFor = 30 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a server with the engine's streams, and a record of the schedules stored.
type fixture struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu        sync.Mutex
	schedules map[string][]events.TimerKind
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, nc, js := natstest.Run(t)
	cfgs := append(streams.Configs(streams.Options{}), streams.InboxConfig(streams.Options{}))
	require.NoError(t, stream.EnsureStreams(testContext(t), js, cfgs))
	f := &fixture{nc: nc, js: js, schedules: map[string][]events.TimerKind{}}
	_, err := nc.Subscribe("memmie.timers.>", func(m *nats.Msg) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("schedule on %s: %v", m.Subject, err)
			return
		}
		d := ev.Data.(*events.TimerFired)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.schedules[d.ExecutionID] = append(f.schedules[d.ExecutionID], d.Kind)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return f
}

func (f *fixture) scheduled(id string) []events.TimerKind {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.schedules[id]
}

// start starts a timers handler, stopped at the end of the test.
func (f *fixture) start(t testing.TB, cfg timers.Config) *timers.Timers {
	t.Helper()
	cfg.DeadLetter = deadletter.NewWriter(f.js, deadletter.Config{})
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := timers.New(f.js, cfg)
	require.NoError(t, err)
	require.NoError(t, h.Start(testContext(t)))
	t.Cleanup(func() { _ = h.Stop(context.Background()) })
	return h
}

// append stores execution events, as the orchestrator would.
func (f *fixture) append(t testing.TB, data ...events.ExecutionData) {
	t.Helper()
	for _, d := range data {
		f.appendWith(t, nil, d)
	}
}

// appendWith stores an execution event with the headers hdr.
func (f *fixture) appendWith(t testing.TB, hdr nats.Header, d events.ExecutionData) {
	t.Helper()
	ev := events.NewExecution(d, events.SourceCore, time.Now())
	b, err := events.Marshal(ev)
	require.NoError(t, err)
	subject, err := events.ExecutionSubject(ev.ExecutionID(), ev.Type)
	require.NoError(t, err)
	_, err = stream.Append(testContext(t), f.js, streams.Executions, []stream.Msg{{Subject: subject, Data: b, ID: ev.ID, Header: hdr}}, stream.Expect{})
	require.NoError(t, err)
}

// consumer returns the timers consumer's state.
func (f *fixture) consumer(t testing.TB) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := f.js.Consumer(testContext(t), streams.Executions, timers.Name)
	require.NoError(t, err)
	ci, err := c.Info(testContext(t))
	require.NoError(t, err)
	return ci
}

// fired returns the timer.fired commands in the inbox, by execution, and when each was stored.
func (f *fixture) fired(t testing.TB) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, m := range natstest.Messages(t, f.js, streams.Inbox) {
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		if _, ok := ev.Data.(*events.TimerFired); ok && strings.HasPrefix(m.Subject, "memmie.inbox.") {
			out[ev.ExecutionID()] = m.Time
		}
	}
	return out
}

// TestDeadlineScheduledOnlyForRunsStillRunning: a run's deadline, far off, is scheduled only
// if the run is still running ScheduleAfter after its start; a run that ended by then stores
// no schedule, and the handler purges nothing. The started events wait on the consumer, so a
// restart of the handler meanwhile loses none, and a deadline that comes due fires.
func TestDeadlineScheduledOnlyForRunsStillRunning(t *testing.T) {
	f := newFixture(t)
	cfg := timers.Config{ScheduleAfter: 2 * time.Second}
	first := f.start(t, cfg)
	now := time.Now()
	soon := now.Add(3 * time.Second) // past ScheduleAfter from the start, due soon after the check
	f.append(t,
		&events.ExecutionStarted{ExecutionID: "ended", Run: 1, Deadline: now.Add(time.Hour)},
		&events.ExecutionStarted{ExecutionID: "retried", Run: 1, Deadline: now.Add(time.Hour)},
		&events.ExecutionStarted{ExecutionID: "long", Run: 1, Deadline: now.Add(time.Hour)},
		&events.ExecutionStarted{ExecutionID: "due", Run: 1, Deadline: soon},
		&events.ExecutionCompleted{ExecutionID: "ended", Run: 1},
		&events.ExecutionRetryScheduled{ExecutionID: "retried", Run: 1, DueAt: now.Add(time.Hour)})
	require.Eventually(t, func() bool {
		ci := f.consumer(t)
		return ci.NumPending == 0 && ci.NumAckPending == 4
	}, waitFor, 10*time.Millisecond, "the four started events wait on the consumer")
	if time.Since(now) < cfg.ScheduleAfter {
		assert.Empty(t, f.scheduled("long"), "no deadline scheduled before ScheduleAfter")
	}

	// The handler restarts while they wait: the next one takes them up.
	require.NoError(t, first.Stop(testContext(t)))
	f.start(t, cfg)

	require.Eventually(t, func() bool { return len(f.fired(t)) == 1 }, waitFor, 10*time.Millisecond, "the due deadline fired")
	firedAt := f.fired(t)["due"]
	assert.False(t, firedAt.Before(soon), "the deadline fired at %s, due %s", firedAt, soon)
	require.Eventually(t, func() bool {
		ci := f.consumer(t)
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, waitFor, 10*time.Millisecond, "every timer event settled")
	require.NoError(t, f.nc.Flush())
	assert.Equal(t, []events.TimerKind{events.TimerExecutionDeadline}, f.scheduled("long"), "a run still running gets its deadline's schedule")
	assert.Equal(t, []events.TimerKind{events.TimerExecutionRetry}, f.scheduled("retried"), "the retry, not the deadline of the run it ended")
	assert.Empty(t, f.scheduled("ended"), "a run that ended stores no schedule")
	assert.Empty(t, f.scheduled("due"), "a deadline due soon is held, not scheduled")
	assert.Equal(t, len(timers.Filters), 4, "the ends of executions are not read")
}
