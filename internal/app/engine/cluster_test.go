package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
)

// cluster is one embedded server and the memmie processes on it. Each process has its own
// connection, registry and engine, as a separate `memmie serve` would.
type cluster struct {
	t    testing.TB
	srv  *natsserver.Server
	svcs map[string]string
	opts []option
	// admin is a connection of the test's own, for reading the streams.
	admin jetstream.JetStream
	procs []*proc
}

// proc is one process of a cluster.
type proc struct {
	c   *cluster
	id  string
	nc  *nats.Conn
	reg *registry.Registry
	eng *engine.Engine

	mu      sync.Mutex
	stopped bool
	crashed chan struct{} // closed when the process crashed
}

// fastRecovery makes a crashed process's work come back within seconds: short leases and
// pins, short ack waits.
func fastRecovery(c *engine.Config) {
	c.Cluster.TTL = 2 * time.Second
	c.Orchestrator.AckWait = 2 * time.Second
	c.Runner.AckWait = 2 * time.Second
	c.Timers.AckWait = 2 * time.Second
	c.Dispatcher.ResendAfter = 2 * time.Second
}

func newCluster(t testing.TB, svcs map[string]string, opts ...option) *cluster {
	t.Helper()
	srv, _, js := natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(testContext(t), js, engine.StreamConfigs(streams.Options{})))
	return &cluster{t: t, srv: srv, svcs: svcs, opts: append([]option{fastRecovery}, opts...), admin: js}
}

// start starts a process called id. crash, when set, makes the process crash at the first
// hook call for which it returns true: its connection closes without draining, and every
// handler abandons the work in hand.
func (c *cluster) start(id string, crash func(at faults.Point, executionID string) bool, opts ...option) *proc {
	t := c.t
	t.Helper()
	ctx := testContext(t)
	p := &proc{c: c, id: id, crashed: make(chan struct{})}
	nc, err := nats.Connect(c.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	reg, err := registry.New(js, registry.Config{Logger: testLogger(t)})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))

	cfg := baseConfig(t, c.svcs)
	for _, o := range append(slices.Clone(c.opts), opts...) {
		o(&cfg)
	}
	cfg.Definitions = reg
	cfg.Cluster.ProcessID = id
	if crash != nil {
		var once sync.Once
		cfg.Hooks = func(_ context.Context, at faults.Point, executionID string) error {
			select {
			case <-p.crashed:
				return faults.ErrCrash // dead already: abandon everything else too
			default:
			}
			if !crash(at, executionID) {
				return nil
			}
			once.Do(func() {
				t.Logf("process %s crashes at %s (execution %s)", id, at, executionID)
				nc.Close()
				close(p.crashed)
			})
			return faults.ErrCrash
		}
	}
	eng, err := engine.New(js, cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	p.nc, p.reg, p.eng = nc, reg, eng
	t.Cleanup(p.stop)
	c.procs = append(c.procs, p)
	return p
}

// restartServer restarts the server on the same store and port while the processes run:
// their connections reconnect.
func (c *cluster) restartServer() {
	c.srv = natstest.Restart(c.t, c.srv)
	// Cleanups run last first: the processes stop before the new server does.
	c.t.Cleanup(func() {
		for _, p := range c.procs {
			p.stop()
		}
	})
}

// client starts a process that runs no handler: it only serves the client methods (Start,
// Execution, ...), as an API-only process would.
func (c *cluster) client() *proc {
	return c.start("client", nil, func(cfg *engine.Config) {
		cfg.Handlers = engine.Handlers{NoOrchestrator: true, NoRunner: true, NoTimers: true, NoDispatcher: true, NoReconciler: true}
	})
}

// stop closes the process cleanly, if it still runs.
func (p *proc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-p.crashed:
		// Dead: reap its goroutines; nothing it does reaches NATS any more.
		_ = p.eng.Close(ctx)
	default:
		assert.NoError(p.c.t, p.eng.Close(ctx), "close %s", p.id)
	}
	_ = p.reg.Stop(ctx)
	p.nc.Close()
}

// kill stops the process abruptly, as kill -9 would: its connection closes without draining,
// its in-flight work is abandoned, it leaves its heartbeat, its lease and its pins behind.
func (p *proc) kill() {
	p.nc.Close()
	close(p.crashed)
	p.stop()
}

// waitCrashed waits until the process crashed at its hook.
func (p *proc) waitCrashed() {
	p.c.t.Helper()
	select {
	case <-p.crashed:
	case <-time.After(waitFor):
		p.c.t.Fatalf("process %s did not crash within %s", p.id, waitFor)
	}
}

// register registers definitions through p and waits until every process's registry has
// them.
func (c *cluster) register(procs []*proc, src ...string) {
	c.t.Helper()
	var defs []definitions.Definition
	for i, s := range src {
		def, err := definitions.Parse(fmt.Sprintf("test%d.yaml", i), []byte(s), "")
		require.NoError(c.t, err)
		defs = append(defs, def)
	}
	_, err := procs[0].reg.Register(testContext(c.t), defs...)
	require.NoError(c.t, err)
	for _, p := range procs {
		for _, d := range defs {
			require.Eventually(c.t, func() bool {
				_, ok := p.reg.Current(d.Kind(), d.DefinitionID())
				return ok
			}, waitFor, 10*time.Millisecond, "process %s sees %s", p.id, d.DefinitionID())
		}
	}
}

// histories reads every execution's history from the stream, keyed by execution id.
func (c *cluster) histories() map[string][]events.Event {
	c.t.Helper()
	msgs, err := stream.Load(testContext(c.t), c.admin, streams.Executions, events.SubjectExecutions)
	require.NoError(c.t, err)
	out := map[string][]events.Event{}
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(c.t, err, m.Subject)
		out[ev.ExecutionID()] = append(out[ev.ExecutionID()], ev)
	}
	return out
}

// ended counts the executions that have a terminal event.
func (c *cluster) ended() int {
	c.t.Helper()
	s, err := c.admin.Stream(testContext(c.t), streams.Executions)
	require.NoError(c.t, err)
	n := 0
	for _, tail := range []string{"completed", "failed", "cancelled"} {
		info, err := s.Info(testContext(c.t), jetstream.WithSubjectFilter("memmie.executions.*."+tail))
		require.NoError(c.t, err)
		n += len(info.State.Subjects)
	}
	return n
}

// waitEnded waits until n executions have ended, for at most d.
func (c *cluster) waitEnded(n int, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.ended() >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.dumpInbox()
	c.t.Fatalf("%d of %d executions ended within %s", c.ended(), n, d)
}

// dumpInbox logs the state of the inbox's consumers and of every process, to tell a stuck
// partition from a slow one.
func (c *cluster) dumpInbox() {
	ctx := testContext(c.t)
	s, err := c.admin.Stream(ctx, streams.Inbox)
	if err != nil {
		c.t.Logf("inbox: %v", err)
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectInboxPartitions))
	if err == nil {
		c.t.Logf("inbox: %d messages, subjects %v", info.State.Msgs, info.State.Subjects)
	}
	for name := range s.ConsumerNames(ctx).Name() {
		cons, err := s.Consumer(ctx, name)
		if err != nil {
			continue
		}
		ci := cons.CachedInfo()
		c.t.Logf("consumer %s: pending %d, ack pending %d, redelivered %d, waiting %d, delivered %d, ack floor %d, groups %+v",
			name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream, ci.PriorityGroups)
	}
	for _, p := range c.procs {
		st := p.eng.Stats()
		c.t.Logf("process %s: members %v, leader %v, partitions %v", p.id, st.Members, st.Leader, st.Orchestrator.Partitions)
	}
}

// checkHistory asserts what no fault may break in a history: exactly one terminal event, the
// one wanted; one start per run; and for every (run, step, attempt) that has a report, exactly
// one report and exactly one result (succeeded or failed). It returns the steps that
// succeeded.
func checkHistory(t testing.TB, id string, history []events.Event, want events.Type) (succeeded []string) {
	t.Helper()
	terminal := 0
	starts := map[int]int{}
	reports := map[events.AttemptRef]int{}
	results := map[events.AttemptRef]int{}
	ids := map[string]bool{}
	for _, ev := range history {
		assert.False(t, ids[ev.ID], "%s: event %s (%s) recorded twice", id, ev.ID, ev.Type)
		ids[ev.ID] = true
		switch d := ev.Data.(type) {
		case *events.ExecutionCompleted, *events.ExecutionFailed, *events.ExecutionCancelled:
			terminal++
			assert.Equal(t, want, ev.Type, "%s ends %s", id, want)
		case *events.ExecutionStarted:
			starts[d.Run]++
		case *events.StepReported:
			reports[d.AttemptRef]++
		case *events.StepSucceeded:
			results[d.AttemptRef]++
			succeeded = append(succeeded, d.StepID)
		case *events.StepFailed:
			results[d.AttemptRef]++
		}
	}
	assert.Equal(t, 1, terminal, "%s: one terminal event", id)
	for run, n := range starts {
		assert.Equal(t, 1, n, "%s: run %d started once", id, run)
	}
	for ref, n := range reports {
		assert.Equal(t, 1, n, "%s: one report of %+v", id, ref)
		assert.Equal(t, 1, results[ref], "%s: one result of %+v", id, ref)
	}
	for ref, n := range results {
		assert.Equal(t, 1, n, "%s: one result of %+v", id, ref)
	}
	return succeeded
}

// startMany starts n executions of workflowID, spread over the processes, from several
// goroutines, and returns their ids.
func startMany(t testing.TB, procs []*proc, workflowID string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	const starters = 8
	for g := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += starters {
				id, _, err := procs[i%len(procs)].eng.Start(context.Background(), engine.StartRequest{
					WorkflowID: workflowID, Input: []byte(fmt.Sprintf(`{"n": %d}`, i)),
				})
				if err != nil {
					failed.Store(err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("start: %v", err)
	}
	return ids
}

// maxGauge tracks the highest value of a concurrent count.
type maxGauge struct{ now, max atomic.Int32 }

func (g *maxGauge) inc() {
	now := g.now.Add(1)
	for old := g.max.Load(); now > old && !g.max.CompareAndSwap(old, now); old = g.max.Load() {
	}
}

func (g *maxGauge) dec() { g.now.Add(-1) }

const twoSteps = `
id: two_steps
steps:
  - {id: one, type: api_call, service: svc, endpoint: /one, input_map: {n: $.input.n}}
  - {id: two, type: api_call, service: svc, endpoint: /two, input_map: {prev: $.steps.one.output.ok}}
`

// sumStats adds up the orchestrators' counters.
func sumStats(procs ...*proc) (decided, conflicts, hits, misses, loads uint64) {
	for _, p := range procs {
		st := p.eng.Stats().Orchestrator
		decided += st.Decided
		conflicts += st.Conflicts
		hits += st.CacheHits
		misses += st.CacheMisses
		loads += st.HistoryLoads
	}
	return
}
