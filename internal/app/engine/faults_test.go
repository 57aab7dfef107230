package engine_test

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// TestCrashMidExecution crashes the only process at each crash point, mid-execution (after a
// step was scheduled and before its result was recorded), and starts it again with the same
// process id. The execution completes, and its history has exactly one result per attempt and
// one terminal event.
func TestCrashMidExecution(t *testing.T) {
	tests := []struct {
		at faults.Point
		// hit is the hit of the point the process crashes at.
		hit int
		// calls bounds the calls of step one. A crash between its call and the
		// acknowledgement of its scheduled attempt makes a second call (with the same
		// idempotency key); a crash elsewhere may too, when the runner's acknowledgement had
		// not left the process yet.
		minCalls, maxCalls int
	}{
		// Commands: 1 start, 2 report of one, 3 report of two.
		{faults.OrchestratorDecided, 2, 1, 2},  // step one's report is not recorded
		{faults.OrchestratorAppended, 2, 1, 2}, // recorded (two is scheduled), not acknowledged
		{faults.RunnerCalled, 1, 2, 2},         // step one called, its report never sent
		{faults.RunnerReported, 1, 2, 2},       // reported, the attempt not acknowledged
		{faults.TimersSet, 1, 1, 2},            // a timer set, the event not acknowledged
		{faults.DispatcherAdmitted, 1, 1, 1},   // admitted (counted), its start never sent
	}
	covered := map[faults.Point]bool{
		// A process dies between a blob event's delta and its ack: TestBlobPartitionsTakenOverFromAKilledProcess.
		faults.BlobsAppended: true,
	}
	for _, tt := range tests {
		covered[tt.at] = true
	}
	for _, p := range crashMidOutputPoints { // the writer of executions' deltas: TestCrashMidOutput
		covered[p] = true
	}
	for _, p := range faults.Points {
		assert.True(t, covered[p], "a crash at %s is tested", p)
	}
	for _, tt := range tests {
		t.Run(string(tt.at), func(t *testing.T) {
			t.Parallel()
			svc := newService(t, reply(200, map[string]any{"ok": true}))
			c := newCluster(t, map[string]string{"svc": svc.URL})
			var hits atomic.Int32
			p := c.start("p1", func(at faults.Point, _ string) bool {
				return at == tt.at && int(hits.Add(1)) == tt.hit
			})
			client := c.client()
			c.register([]*proc{p, client}, twoSteps)
			id, _, err := client.eng.Start(testContext(t), engine.StartRequest{WorkflowID: "two_steps", Input: []byte(`{"n": 1}`)})
			require.NoError(t, err)
			p.waitCrashed()
			p.stop()

			restarted := time.Now()
			again := c.start("p1", nil)
			c.waitEnded(1, waitFor)
			t.Logf("completed %s after the restart", time.Since(restarted).Round(time.Millisecond))

			history := c.histories()[id]
			assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, history, events.TypeExecutionCompleted))
			s, err := again.eng.Execution(testContext(t), id)
			require.NoError(t, err)
			assert.Equal(t, execution.StatusCompleted, s.Status)
			var keys []string
			for _, call := range svc.Calls() {
				if call.Path == "/one" {
					keys = append(keys, call.Headers["Idempotency-Key"])
				}
			}
			assert.GreaterOrEqual(t, len(keys), tt.minCalls, "calls of step one")
			assert.LessOrEqual(t, len(keys), tt.maxCalls, "calls of step one")
			for _, k := range keys {
				assert.Equal(t, id+"/one", k, "a call made again carries the same idempotency key")
			}
		})
	}
}

// TestNATSRestartMidRun restarts the embedded server, on the same store, while two processes
// run executions: every execution completes, each with one result per attempt.
func TestNATSRestartMidRun(t *testing.T) {
	svc := newService(t, func(call, int) (int, any) {
		time.Sleep(20 * time.Millisecond)
		return 200, map[string]any{"ok": true}
	})
	c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(10))
	procs := []*proc{c.start("p1", nil), c.start("p2", nil)}
	c.register(procs, twoSteps)
	const n = 40
	ids := startMany(t, procs, "two_steps", n)
	deadline := time.Now().Add(waitFor)
	for c.ended() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ended := c.ended()
	require.Less(t, ended, n, "the restart comes mid-run")
	c.restartServer()
	t.Logf("server restarted with %d of %d executions ended", ended, n)

	c.waitEnded(n, 2*waitFor)
	histories := c.histories()
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}
}

// TestTwoProcesses500Executions runs 500 executions on two processes against one server:
// each ends once, completed, with one result per attempt, and no more executions run at
// once than the maximum, across both. It reports the OCC conflicts.
func TestTwoProcesses500Executions(t *testing.T) {
	const (
		n          = 500
		maxRunning = 20
	)
	var inFlight maxGauge
	svc := newService(t, func(call, int) (int, any) {
		inFlight.inc()
		defer inFlight.dec()
		time.Sleep(5 * time.Millisecond)
		return 200, map[string]any{"ok": true}
	})
	c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(maxRunning))
	procs := []*proc{c.start("p1", nil), c.start("p2", nil)}
	c.register(procs, twoSteps)
	require.Eventually(t, func() bool {
		a, b := procs[0].eng.Stats(), procs[1].eng.Stats()
		return len(a.Members) == 2 && len(b.Members) == 2 &&
			len(a.Orchestrator.Partitions)+len(b.Orchestrator.Partitions) == streams.DefaultPartitions
	}, waitFor, 10*time.Millisecond, "the processes share the partitions")

	started := time.Now()
	ids := startMany(t, procs, "two_steps", n)
	c.waitEnded(n, 4*waitFor)
	elapsed := time.Since(started)

	histories := c.histories()
	require.Len(t, histories, n)
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}
	assert.LessOrEqual(t, int(inFlight.max.Load()), maxRunning, "max running holds across the processes")
	keys := map[string]bool{}
	calls := svc.Calls()
	for _, call := range calls {
		keys[call.Headers["Idempotency-Key"]] = true
	}
	assert.Len(t, keys, 2*n, "every step called")
	if len(calls) > len(keys) {
		t.Logf("%d calls made again (an attempt delivered twice)", len(calls)-len(keys))
	}

	decided, conflicts, hits, misses, loads := sumStats(procs...)
	for _, p := range procs {
		st := p.eng.Stats()
		t.Logf("%s: leader %v, partitions %v, %+v", p.id, st.Leader, st.Orchestrator.Partitions, st.Orchestrator)
	}
	t.Logf("%d executions in %s (%.0f/s) on two processes: %d commands decided, %d OCC conflicts, "+
		"cache %d hits / %d misses, %d history loads; at most %d running at once",
		n, elapsed.Round(time.Millisecond), n/elapsed.Seconds(), decided, conflicts, hits, misses, loads, inFlight.max.Load())
	assert.Eventually(t, func() bool {
		leaders := 0
		for _, p := range procs {
			if p.eng.Stats().Leader {
				leaders++
			}
		}
		return leaders == 1
	}, waitFor, 10*time.Millisecond, "one dispatcher admits")
}

// TestProcessKilled kills one of two processes mid-run (its connection closes without
// draining; it leaves its heartbeat, its dispatcher lease and its pins behind): the other
// takes its partitions and the lease over and finishes every execution.
func TestProcessKilled(t *testing.T) {
	const maxRunning = 10
	var inFlight maxGauge
	svc := newService(t, func(call, int) (int, any) {
		inFlight.inc()
		defer inFlight.dec()
		time.Sleep(10 * time.Millisecond)
		return 200, map[string]any{"ok": true}
	})
	c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(maxRunning))
	victim := c.start("victim", nil) // first: it leads the dispatchers
	survivor := c.start("survivor", nil)
	procs := []*proc{victim, survivor}
	c.register(procs, twoSteps)
	require.Eventually(t, func() bool {
		return victim.eng.Stats().Leader && len(survivor.eng.Stats().Members) == 2 &&
			len(survivor.eng.Stats().Orchestrator.Partitions) < streams.DefaultPartitions
	}, waitFor, 10*time.Millisecond, "the victim leads, and the partitions are shared")

	const n = 100
	ids := startMany(t, procs, "two_steps", n)
	deadline := time.Now().Add(waitFor)
	for c.ended() < 20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	require.Less(t, c.ended(), n, "the kill comes mid-run")
	killed := time.Now()
	victim.kill()

	var partitionsAt, leaderAt time.Duration
	deadline = time.Now().Add(waitFor)
	for (partitionsAt == 0 || leaderAt == 0) && time.Now().Before(deadline) {
		st := survivor.eng.Stats()
		if partitionsAt == 0 && len(st.Orchestrator.Partitions) == streams.DefaultPartitions {
			partitionsAt = time.Since(killed)
		}
		if leaderAt == 0 && st.Leader {
			leaderAt = time.Since(killed)
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NotZero(t, partitionsAt, "the survivor takes every partition")
	require.NotZero(t, leaderAt, "the survivor leads")
	c.waitEnded(n, 4*waitFor)
	t.Logf("after the kill: partitions taken over in %s, the lease in %s, every execution ended in %s (TTL 2s)",
		partitionsAt.Round(time.Millisecond), leaderAt.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	histories := c.histories()
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}
	assert.LessOrEqual(t, int(inFlight.max.Load()), maxRunning, "max running holds across the change of leader")
	st := survivor.eng.Stats().Orchestrator
	t.Logf("survivor: %d commands decided, %d OCC conflicts, cache %d hits / %d misses, %d history loads",
		st.Decided, st.Conflicts, st.CacheHits, st.CacheMisses, st.HistoryLoads)
}

// TestPriorityOvertakesTheQueue keeps a maximum of 1 running execution, queues 50 executions
// at priority 0 and then 5 at priority 50: the 5 start before any of the 49 still waiting.
// With two processes the starts are spread over both, and one dispatcher admits.
func TestPriorityOvertakesTheQueue(t *testing.T) {
	for _, processes := range []int{1, 2} {
		t.Run(map[int]string{1: "one process", 2: "two processes"}[processes], func(t *testing.T) {
			release := make(chan struct{})
			var inFlight maxGauge
			svc := newService(t, func(c call, _ int) (int, any) {
				inFlight.inc()
				defer inFlight.dec()
				if body, _ := c.Body.(map[string]any); body["priority"] == float64(0) && body["n"] == float64(0) {
					select { // the first holds the only slot until every other is queued
					case <-release:
					case <-c.ctx.Done():
						return 0, nil
					}
				}
				return 200, map[string]any{}
			})
			c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(1))
			var procs []*proc
			for i := range processes {
				procs = append(procs, c.start([]string{"p1", "p2"}[i], nil))
			}
			c.register(procs, `
id: prioritised
steps:
  - {id: run, type: api_call, service: svc, endpoint: /run, input_map: {n: $.input.n, priority: $.input.priority}}
`)
			ctx := testContext(t)
			start := func(i, n, priority int) string {
				t.Helper()
				in, _ := json.Marshal(map[string]any{"n": n, "priority": priority})
				id, _, err := procs[i%len(procs)].eng.Start(ctx, engine.StartRequest{WorkflowID: "prioritised", Input: in, Priority: priority})
				require.NoError(t, err)
				return id
			}
			var low, high []string
			low = append(low, start(0, 0, 0))
			svc.waitCalls(t, 1)
			for i := 1; i < 50; i++ {
				low = append(low, start(i, i, 0))
			}
			for i := range 5 {
				high = append(high, start(i, i, 50))
			}
			require.Eventually(t, func() bool {
				for _, p := range procs {
					if q, running := p.eng.Queue(); len(q) != 54 || running != 1 {
						return false
					}
				}
				return true
			}, waitFor, 10*time.Millisecond, "49 + 5 executions wait, in every process's view")

			close(release)
			c.waitEnded(55, 2*waitFor)
			msgs, err := stream.Load(ctx, c.admin, streams.Executions, "memmie.executions.*.started")
			require.NoError(t, err)
			var order []string
			for _, m := range msgs {
				id, _, err := events.ParseExecutionSubject(m.Subject)
				require.NoError(t, err)
				order = append(order, id)
			}
			require.Len(t, order, 55)
			assert.Equal(t, low[0], order[0], "the first low one started at once")
			assert.Equal(t, high, order[1:6], "the 5 high ones start next, in arrival order")
			assert.Equal(t, low[1:], order[6:], "then the 49 low ones, in arrival order")
			assert.Equal(t, int32(1), inFlight.max.Load(), "one execution at a time")
		})
	}
}

// TestNewLeaderCountsTheLastLeadersStarts: a leader admits two executions (max running 2)
// and dies before they start — their start commands wait in the inbox. A higher-priority
// execution is queued meanwhile. The next leader counts the two as running, so the third
// waits: it does not admit the high one on top of them.
func TestNewLeaderCountsTheLastLeadersStarts(t *testing.T) {
	release := make(chan struct{})
	var inFlight maxGauge
	svc := newService(t, func(c call, _ int) (int, any) {
		inFlight.inc()
		defer inFlight.dec()
		select {
		case <-release:
		case <-c.ctx.Done():
			return 0, nil
		}
		return 200, map[string]any{}
	})
	c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(2))
	dispatchOnly := func(cfg *engine.Config) {
		cfg.Handlers = engine.Handlers{NoOrchestrator: true, NoRunner: true, NoTimers: true}
	}
	first := c.start("first", nil, dispatchOnly) // admits, but nothing takes its starts up
	client := c.client()
	c.register([]*proc{first, client}, `
id: one_call
steps:
  - {id: call, type: api_call, service: svc, endpoint: /call}
`)
	ctx := testContext(t)
	start := func(priority int) string {
		id, _, err := client.eng.Start(ctx, engine.StartRequest{WorkflowID: "one_call", Priority: priority})
		require.NoError(t, err)
		return id
	}
	e1, e2 := start(0), start(0)
	inbox, err := c.admin.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := inbox.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectInboxPartitions))
		return err == nil && len(info.State.Subjects) == 2
	}, waitFor, 10*time.Millisecond, "the first leader sent two starts")
	first.kill()
	e3 := start(50)

	second := c.start("second", nil, dispatchOnly)
	require.Eventually(t, func() bool { return second.eng.Stats().Leader }, waitFor, 10*time.Millisecond)
	queued, running := second.eng.Queue()
	assert.Equal(t, 2, running, "the last leader's starts count")
	require.Len(t, queued, 1)
	assert.Equal(t, e3, queued[0].ExecutionID, "the high one waits for a free slot")

	// Executions run once a process takes commands up.
	c.start("worker", nil)
	svc.waitCalls(t, 2)
	close(release)
	c.waitEnded(3, waitFor)
	assert.Equal(t, int32(2), inFlight.max.Load(), "two at a time")
	histories := c.histories()
	for _, id := range []string{e1, e2, e3} {
		checkHistory(t, id, histories[id], events.TypeExecutionCompleted)
	}
}

// TestProcessesJoinMidRun starts two more processes while one runs executions: they take
// their share of the partitions (the first hands them over, drained and unpinned), take part
// in the work, and every execution completes once.
func TestProcessesJoinMidRun(t *testing.T) {
	svc := newService(t, func(call, int) (int, any) {
		time.Sleep(40 * time.Millisecond)
		return 200, map[string]any{"ok": true}
	})
	c := newCluster(t, map[string]string{"svc": svc.URL}, withMaxRunning(4))
	first := c.start("p1", nil)
	c.register([]*proc{first}, twoSteps)
	const n = 60
	ids := startMany(t, []*proc{first}, "two_steps", n)
	deadline := time.Now().Add(waitFor)
	for c.ended() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	require.Less(t, c.ended(), n/2, "they join mid-run")
	joined := time.Now()
	procs := []*proc{first, c.start("p2", nil), c.start("p3", nil)}
	require.Eventually(t, func() bool {
		total := 0
		for _, p := range procs {
			parts := len(p.eng.Stats().Orchestrator.Partitions)
			if parts == 0 {
				return false
			}
			total += parts
		}
		return total == streams.DefaultPartitions
	}, waitFor, 10*time.Millisecond, "the partitions are shared by the three")
	t.Logf("partitions shared out %s after the others joined", time.Since(joined).Round(time.Millisecond))

	c.waitEnded(n, 2*waitFor)
	histories := c.histories()
	for _, id := range ids {
		assert.Equal(t, []string{"one", "two"}, checkHistory(t, id, histories[id], events.TypeExecutionCompleted))
	}
	for _, p := range procs[1:] {
		assert.NotZero(t, p.eng.Stats().Orchestrator.Decided, "%s took part", p.id)
	}
	decided, conflicts, hits, misses, loads := sumStats(procs...)
	t.Logf("%d commands decided, %d OCC conflicts, cache %d hits / %d misses, %d history loads", decided, conflicts, hits, misses, loads)
}
