package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/blobs"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/handlers/reconciler"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/handlers/timers"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/blobstore"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/inbox"
	"github.com/memmie/memmie/internal/jetstream/lease"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/internal/tracing"
)

// Errors of the client methods. The API maps them to HTTP statuses.
var (
	// ErrNotFound: no execution with that id.
	ErrNotFound = errors.New("execution not found")
	// ErrWorkflowNotFound: no workflow with that id was ever registered.
	ErrWorkflowNotFound = errors.New("workflow not found")
	// ErrWorkflowInactive: the workflow, or a schema it names, is deactivated.
	ErrWorkflowInactive = errors.New("workflow inactive")
	// ErrInvalid: the request is malformed (priority out of range, input not JSON, ...).
	ErrInvalid = errors.New("invalid request")
	// ErrState: the execution is not in a state that allows the request (cancel of an ended
	// execution, retry of one that did not fail).
	ErrState = errors.New("execution state does not allow this")
	// ErrNoDefinitions: the engine was built without Config.Definitions.
	ErrNoDefinitions = errors.New("engine has no definitions registry")
)

// MaxRetriesLimit bounds StartRequest.MaxRetries.
const MaxRetriesLimit = 100

// Definitions gives the current revision of a definition, and of every definition of a kind
// (the providers whose triggers blob events are matched against); *registry.Registry is one.
type Definitions interface {
	Current(kind definitions.Kind, id string) (registry.Revision, bool)
	List(kind definitions.Kind) []registry.Revision
}

// Config configures an Engine. The handler configs are passed on as they are, with Logger,
// Now and DeadLetter filled in when unset; see each package for its defaults.
type Config struct {
	// Definitions resolves workflows and schemas for Start. Required for Start.
	Definitions Definitions
	// Services are the services the runner may call. Defaults to none: every api_call step
	// fails with unknown_service.
	Services *services.Registry
	// Caller makes the runner's HTTP calls. Defaults to a services.Caller over Services
	// with its default limits, except a response limit of runner.DefaultMaxResponseBytes.
	Caller runner.Caller
	// Streams varies the stream configurations (replicas, storage, inbox partitions).
	// Defaults to one replica on file storage, streams.DefaultPartitions partitions. Every
	// process must use the same partitions.
	Streams streams.Options
	// Handlers lists what Open starts. Defaults to all of them.
	Handlers Handlers
	// Cluster says how this process shares the work with others.
	Cluster Cluster
	// Hooks inject faults into every handler (tests only; see package faults). A handler's
	// own Hooks take precedence. Defaults to none.
	Hooks faults.Hook

	Orchestrator orchestrator.Config
	Runner       runner.Config
	Timers       timers.Config
	// Dispatcher.MaxRunning is memmie's --max-running.
	Dispatcher dispatcher.Config
	// Reconciler re-issues lost timers; its Leader defaults to the lease of the role
	// reconciler.Name, so that one process at a time reconciles.
	Reconciler reconciler.Config
	// Blobs records blob events as deltas, and appends the trigger request of each.
	Blobs blobs.Config
	// Triggers starts the executions that trigger requests ask for. Its Providers default to
	// the active providers of Definitions (none without Definitions), and its Prepare to the
	// engine's Start, up to the append, with the trigger's execution id. Its Trigger holds the
	// derivation bound (memmie's --max-derivation-depth).
	Triggers triggers.Config

	// TracerProvider, when set, traces blob events through their triggers, executions, step
	// calls and deltas (package tracing); a handler's own Tracer takes precedence. Defaults
	// to none: tracing off, no trace headers written.
	TracerProvider trace.TracerProvider

	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Cluster says how a process shares the work with the other processes on the same NATS.
type Cluster struct {
	// ProcessID names this process among the live ones: a subject token, unique among them.
	// A process started again with the same id takes its partitions and the dispatcher's
	// lease back at once after a clean stop, and within half a TTL after a crash (its last
	// heartbeat is watched for two renewals); a second live process with the same id is
	// refused. Defaults to the host name and a random suffix.
	ProcessID string
	// TTL is how long a process that stopped without saying so (a crash, a lost network)
	// keeps its inbox and blob partitions and the dispatcher's lease: the time the others take to
	// take them over. Defaults to lease.DefaultTTL.
	TTL time.Duration
}

// Handlers selects the handlers Open starts. The blobs handler consumes blob events only
// beside the orchestrator, whose partitions it takes (MEMMIE_BLOBS is partitioned as the inbox
// is); without it, it writes executions' deltas only. The trigger matcher (NoTriggers) starts
// the executions the recorded blob events trigger, in any process.
type Handlers struct {
	NoOrchestrator, NoRunner, NoTimers, NoDispatcher, NoReconciler, NoBlobs, NoTriggers bool
}

// Engine runs executions: its client methods (Start, Execution, ExecutionSeq, History,
// Cancel, Retry, Queue, Ready) serve the API, and Open/Close run the handlers. (Its lifecycle
// is Open and Close, not Start and Stop, because Start starts an execution.)
type Engine struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	mu           sync.Mutex
	open         bool
	orchestrator *orchestrator.Orchestrator
	runner       *runner.Runner
	timers       *timers.Timers
	dispatcher   *dispatcher.Dispatcher
	reconciler   *reconciler.Reconciler
	blobs        *blobs.Handler
	triggers     *triggers.Matcher
	caller       *services.Caller
	members      *lease.Members
	leader       *lease.Lease
	assignStop   chan struct{}
	assignDone   chan struct{}
	// assignKick asks the assign loop to assign the partitions again.
	assignKick chan struct{}
	// seeder is the orchestrator while it runs, which Start tells of the queued events it
	// appends.
	seeder atomic.Pointer[orchestrator.Orchestrator]
	// blobsAssigned is the blobs handler while it runs, which the assign loop gives the
	// orchestrator's partitions too (MEMMIE_BLOBS is partitioned as the inbox is).
	blobsAssigned atomic.Pointer[blobs.Handler]
	// parts are what Open started, stopped by Close in reverse.
	parts *lifecycle.Group
	// closed keeps the orchestrator's counters of the last run once it is closed.
	closed orchestrator.Stats
	// reconLease is the reconciler's lease, when the engine made it.
	reconLease *lease.Lease
}

// New returns an engine on js. It starts nothing; Open does.
func New(js jetstream.JetStream, cfg Config) (*Engine, error) {
	if js == nil {
		return nil, errors.New("engine: no JetStream context")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Cluster.TTL = cmp.Or(cfg.Cluster.TTL, lease.DefaultTTL)
	if cfg.Cluster.ProcessID == "" {
		cfg.Cluster.ProcessID = defaultProcessID() // host name and a random suffix: only when needed
	}
	if err := events.ValidToken(cfg.Cluster.ProcessID); err != nil {
		return nil, fmt.Errorf("engine: Cluster.ProcessID: %w", err)
	}
	if p := cfg.Streams.Partitions; p < 0 || p > streams.MaxPartitions {
		return nil, fmt.Errorf("engine: Streams.Partitions %d is not within 1 to %d", p, streams.MaxPartitions)
	}
	if cfg.Cluster.TTL < 2*time.Second {
		return nil, fmt.Errorf("engine: Cluster.TTL %s is under 2 seconds", cfg.Cluster.TTL)
	}
	return &Engine{js: js, cfg: cfg, log: cfg.Logger.With("component", "engine", "process_id", cfg.Cluster.ProcessID)}, nil
}

// defaultProcessID is the host name (as a subject token) and a random suffix.
func defaultProcessID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	host = cmp.Or(host, "memmie")
	return host + "-" + uuid.NewString()[:8]
}

// ProcessID returns the name of this process among those that share the work.
func (e *Engine) ProcessID() string { return e.cfg.Cluster.ProcessID }

// StreamConfigs returns the configuration of every stream the engine uses: the contract's
// streams, the inbox, the leases and the trigger requests.
func StreamConfigs(opts streams.Options) []jetstream.StreamConfig {
	return append(streams.Configs(opts), streams.InboxConfig(opts), streams.LeasesConfig(opts), streams.TriggersConfig(opts))
}

// Open creates the streams that do not exist and starts the handlers: the orchestrator
// first, so that commands are taken up as soon as others send them, the dispatcher last, once
// it has rebuilt its queue. It never rewrites an existing stream: one whose partitions,
// replicas or storage differ from Config.Streams fails Open (stream.Ensure), and smaller
// differences are logged; `memmie streams update` applies them.
func (e *Engine) Open(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open {
		return errors.New("engine: already open")
	}
	if err := stream.Ensure(ctx, e.js, StreamConfigs(e.cfg.Streams), e.log); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	dl := deadletter.NewWriter(e.js, deadletter.Config{Now: e.cfg.Now})
	// Parts start in order and stop in reverse: the orchestrator (which takes the commands
	// the others send) first and last, the dispatcher and the reconciler, which send them,
	// last and first.
	var g lifecycle.Group
	fail := func(err error) error {
		_ = g.Stop(context.WithoutCancel(ctx))
		e.reset()
		return fmt.Errorf("engine: %w", err)
	}

	if !e.cfg.Handlers.NoOrchestrator {
		if err := e.openOrchestrator(ctx, &g, dl); err != nil {
			return fail(err)
		}
	}
	if !e.cfg.Handlers.NoRunner {
		cfg := e.cfg.Runner
		e.fill(&cfg.Logger, &cfg.Now, &cfg.Hooks)
		e.trace(&cfg.Tracer)
		if cfg.DeadLetter == nil {
			cfg.DeadLetter = dl
		}
		if cfg.Caller == nil {
			cfg.Caller = e.cfg.Caller
		}
		if cfg.Local == nil && e.orchestrator != nil {
			// The reports of the executions whose partitions this process consumes are
			// recorded here, without the inbox.
			cfg.Local = e.orchestrator
		}
		if cfg.Caller == nil {
			reg := e.cfg.Services
			if reg == nil {
				reg, _ = services.NewRegistry()
			}
			c, err := services.NewCaller(services.Config{Registry: reg, MaxResponseBytes: runner.DefaultMaxResponseBytes,
				TracerProvider: e.cfg.TracerProvider})
			if err != nil {
				return fail(err)
			}
			e.caller, cfg.Caller = c, c
		}
		r, err := runner.New(e.js, cfg)
		if err != nil {
			return fail(err)
		}
		if err := g.Start(ctx, r); err != nil {
			return fail(err)
		}
		e.runner = r
	}
	if !e.cfg.Handlers.NoTimers {
		cfg := e.cfg.Timers
		e.fill(&cfg.Logger, &cfg.Now, &cfg.Hooks)
		e.trace(&cfg.Tracer)
		if cfg.DeadLetter == nil {
			cfg.DeadLetter = dl
		}
		t, err := timers.New(e.js, cfg)
		if err != nil {
			return fail(err)
		}
		if err := g.Start(ctx, t); err != nil {
			return fail(err)
		}
		e.timers = t
	}
	if !e.cfg.Handlers.NoBlobs {
		if err := e.openBlobs(ctx, &g, dl); err != nil {
			return fail(err)
		}
	}
	if !e.cfg.Handlers.NoTriggers {
		if err := e.openTriggers(ctx, &g, dl); err != nil {
			return fail(err)
		}
	}
	if !e.cfg.Handlers.NoDispatcher {
		cfg := e.cfg.Dispatcher
		e.fill(&cfg.Logger, &cfg.Now, &cfg.Hooks)
		e.trace(&cfg.Tracer)
		if cfg.DeadLetter == nil {
			cfg.DeadLetter = dl
		}
		if cfg.Leader == nil {
			// One dispatcher admits at a time, so that MaxRunning holds across processes.
			l, err := lease.New(e.js, lease.Config{
				Role:   dispatcher.Name,
				Holder: e.cfg.Cluster.ProcessID,
				TTL:    e.cfg.Cluster.TTL,
				Logger: e.cfg.Logger,
			})
			if err != nil {
				return fail(err)
			}
			e.leader, cfg.Leader = l, l
		}
		d, err := dispatcher.New(e.js, cfg)
		if err != nil {
			return fail(err)
		}
		// The lease only once the queue is rebuilt (a process that holds it admits at once),
		// and given up only once the dispatcher has stopped (its last snapshot is a leader's).
		if err := g.Start(ctx, ledBy(d, e.leader)); err != nil {
			return fail(err)
		}
		e.dispatcher = d
	}
	if !e.cfg.Handlers.NoReconciler {
		if err := e.openReconciler(ctx, &g); err != nil {
			return fail(err)
		}
	}
	e.parts = &g
	e.open = true
	e.log.Info("engine open")
	return nil
}

// openOrchestrator starts the orchestrator, this process's membership among the live ones,
// and the loop that gives the orchestrator the inbox partitions of the live processes' latest
// view. They stop as one: the assignments end, the orchestrator hands its partitions back,
// and only then does the process leave.
func (e *Engine) openOrchestrator(ctx context.Context, g *lifecycle.Group, dl *deadletter.Writer) error {
	cfg := e.cfg.Orchestrator
	e.fill(&cfg.Logger, &cfg.Now, &cfg.Hooks)
	e.trace(&cfg.Tracer)
	if cfg.DeadLetter == nil {
		cfg.DeadLetter = dl
	}
	cfg.Partitions = cmp.Or(cfg.Partitions, streams.InboxPartitions(e.cfg.Streams))
	cfg.PinnedTTL = cmp.Or(cfg.PinnedTTL, e.cfg.Cluster.TTL)
	o, err := orchestrator.New(e.js, cfg)
	if err != nil {
		return err
	}
	kick := make(chan struct{}, 1)
	e.assignKick = kick
	m, err := lease.NewMembers(e.js, lease.MembersConfig{
		ID:  e.cfg.Cluster.ProcessID,
		TTL: e.cfg.Cluster.TTL,
		OnChange: func([]string) {
			select {
			case kick <- struct{}{}:
			default:
			}
		},
		Logger: e.cfg.Logger,
	})
	if err != nil {
		return err
	}
	return g.Start(ctx, lifecycle.Funcs{
		OnStart: func(ctx context.Context) error {
			if err := o.Start(ctx); err != nil {
				return err
			}
			if err := m.Start(ctx); err != nil {
				_ = o.Stop(context.WithoutCancel(ctx))
				return err
			}
			e.orchestrator, e.members = o, m
			if err := o.Assign(ctx, e.partitions()); err != nil {
				e.log.Warn("assign partitions; trying again", "err", err)
			}
			e.seeder.Store(o)
			e.assignStop, e.assignDone = make(chan struct{}), make(chan struct{})
			go e.assignLoop(o, m, kick, e.assignStop, e.assignDone)
			return nil
		},
		OnStop: func(ctx context.Context) error {
			e.seeder.Store(nil)
			e.stopAssigning()
			err := o.Stop(ctx)
			e.closed = o.Stats()
			return errors.Join(err, leave(ctx, m))
		},
	})
}

// ledBy starts a handler, then the lease it leads by, and stops them in the same order: the
// handler stops while it still leads, then the lease is given up.
func ledBy(handler lifecycle.Component, l *lease.Lease) lifecycle.Component {
	if l == nil {
		return handler
	}
	return lifecycle.Funcs{
		OnStart: func(ctx context.Context) error {
			if err := handler.Start(ctx); err != nil {
				return err
			}
			if err := l.Start(ctx); err != nil {
				_ = handler.Stop(context.WithoutCancel(ctx))
				return err
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			return errors.Join(handler.Stop(ctx), leave(ctx, l))
		},
	}
}

// leave stops a lease or a membership with its own few seconds, even when ctx has run out on
// handlers that stopped slowly: leaving is quick, and lets the other processes take over at
// once rather than after Cluster.TTL.
func leave(ctx context.Context, c lifecycle.Component) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return c.Stop(ctx)
}

// openBlobs starts the writer of blob histories, which asks the trigger matcher to start
// the executions blob events trigger.
func (e *Engine) openBlobs(ctx context.Context, g *lifecycle.Group, dl *deadletter.Writer) error {
	cfg := e.cfg.Blobs
	if cfg.Now == nil {
		// Deltas to the microsecond, as Postgres keeps times: the blobs projection then serves
		// every blob, at every version, exactly as a fold of its deltas gives it.
		now := e.cfg.Now
		cfg.Now = func() time.Time { return now().Truncate(time.Microsecond) }
	}
	e.fill(&cfg.Logger, &cfg.Now, &cfg.Hooks)
	e.trace(&cfg.Tracer)
	if cfg.DeadLetter == nil {
		cfg.DeadLetter = dl
	}
	if cfg.Hooks == nil {
		cfg.Hooks = e.cfg.Hooks
	}
	cfg.Partitions = cmp.Or(cfg.Partitions, streams.InboxPartitions(e.cfg.Streams))
	cfg.PinnedTTL = cmp.Or(cfg.PinnedTTL, e.cfg.Cluster.TTL)
	b, err := blobs.New(e.js, cfg)
	if err != nil {
		return err
	}
	err = g.Start(ctx, lifecycle.Funcs{
		OnStart: func(ctx context.Context) error {
			if err := b.Start(ctx); err != nil {
				return err
			}
			if e.members == nil {
				// No orchestrator, so no partitions: the blob events are consumed by the
				// processes that run one; this one writes executions' deltas only.
				return nil
			}
			if err := b.Assign(ctx, e.partitions()); err != nil {
				e.log.Warn("assign blob partitions; trying again", "err", err)
			}
			// From now on the assign loop moves the blob partitions with the inbox's.
			e.blobsAssigned.Store(b)
			select {
			case e.assignKick <- struct{}{}:
			default:
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			// Stop cuts short an assignment in progress and waits for it.
			e.blobsAssigned.Store(nil)
			return b.Stop(ctx)
		},
	})
	if err != nil {
		return err
	}
	e.blobs = b
	return nil
}

// activeProviders returns the current revisions of the active providers.
func (e *Engine) activeProviders() []*definitions.Provider {
	var out []*definitions.Provider
	for _, rev := range e.cfg.Definitions.List(definitions.KindProvider) {
		if p, ok := rev.Def.(*definitions.Provider); ok && rev.Active {
			out = append(out, p)
		}
	}
	return out
}

// openTriggers starts the trigger matcher, which queues the executions that trigger requests
// ask for through prepareTriggered.
func (e *Engine) openTriggers(ctx context.Context, g *lifecycle.Group, dl *deadletter.Writer) error {
	cfg := e.cfg.Triggers
	cfg.Logger = cmp.Or(cfg.Logger, e.cfg.Logger)
	e.trace(&cfg.Tracer)
	if cfg.DeadLetter == nil {
		cfg.DeadLetter = dl
	}
	if cfg.Providers == nil && e.cfg.Definitions != nil {
		cfg.Providers = e.activeProviders
	}
	if cfg.Prepare == nil {
		cfg.Prepare = e.prepareTriggered
	}
	m, err := triggers.New(e.js, cfg)
	if err != nil {
		return err
	}
	if err := g.Start(ctx, m); err != nil {
		return err
	}
	e.triggers = m
	return nil
}

// prepareTriggered builds the queued event of the execution a blob event triggers, under the
// trigger's deterministic id, and says what the matcher is to make of a start that fails: a
// workflow not registered or not active is skipped, a start that can never succeed (an input
// against the schema) refused.
func (e *Engine) prepareTriggered(_ context.Context, s trigger.Start) (stream.Msg, error) {
	input, err := json.Marshal(s.Input)
	if err != nil {
		return stream.Msg{}, fmt.Errorf("%w: input: %v", triggers.ErrUnstartable, err)
	}
	ev, data, err := e.prepare(StartRequest{
		ExecutionID:   s.ExecutionID,
		WorkflowID:    s.WorkflowID,
		Input:         input,
		Priority:      s.Priority,
		ProviderID:    s.ProviderID,
		BlobID:        s.BlobID,
		SourceEventID: s.SourceEventID,
		BaseVersion:   s.BaseVersion,
		Trigger:       s.Trigger,
	})
	switch {
	case errors.Is(err, ErrWorkflowNotFound), errors.Is(err, ErrWorkflowInactive), errors.Is(err, ErrNoDefinitions):
		return stream.Msg{}, fmt.Errorf("%w: %v", triggers.ErrSkipped, err)
	case errors.Is(err, ErrInvalidInput), errors.Is(err, ErrInvalid):
		return stream.Msg{}, fmt.Errorf("%w: %v", triggers.ErrUnstartable, err)
	case err != nil:
		return stream.Msg{}, err
	}
	return stream.Msg{Subject: ev.Subject, Data: data, ID: ev.ID}, nil
}

// openReconciler starts the reconciler, and its lease unless Config.Reconciler.Leader is set.
func (e *Engine) openReconciler(ctx context.Context, g *lifecycle.Group) error {
	cfg := e.cfg.Reconciler
	cfg.Logger = cmp.Or(cfg.Logger, e.cfg.Logger)
	e.trace(&cfg.Tracer)
	if cfg.Now == nil {
		cfg.Now = e.cfg.Now
	}
	if cfg.Leader == nil {
		l, err := lease.New(e.js, lease.Config{Role: reconciler.Name, Holder: e.cfg.Cluster.ProcessID,
			TTL: e.cfg.Cluster.TTL, Logger: e.cfg.Logger})
		if err != nil {
			return err
		}
		e.reconLease, cfg.Leader = l, l
	}
	r, err := reconciler.New(e.js, cfg)
	if err != nil {
		return err
	}
	if err := g.Start(ctx, ledBy(r, e.reconLease)); err != nil {
		return err
	}
	e.reconciler = r
	return nil
}

// reset forgets the parts of the last run; e.mu is held.
func (e *Engine) reset() {
	e.orchestrator, e.runner, e.timers, e.dispatcher = nil, nil, nil, nil
	e.members, e.leader = nil, nil
	e.reconciler, e.reconLease = nil, nil
	e.blobs, e.triggers = nil, nil
	e.blobsAssigned.Store(nil)
	e.seeder.Store(nil)
	e.assignKick = nil
	e.parts = nil
	if e.caller != nil {
		e.caller.Close()
		e.caller = nil
	}
}

// trace fills an unset handler Tracer with the engine's.
func (e *Engine) trace(t *tracing.Tracer) {
	if !t.On() {
		*t = tracing.New(e.cfg.TracerProvider)
	}
}

func (e *Engine) fill(log **slog.Logger, now *func() time.Time, hooks *faults.Hook) {
	if *log == nil {
		*log = e.cfg.Logger
	}
	if *now == nil {
		*now = e.cfg.Now
	}
	if *hooks == nil {
		*hooks = e.cfg.Hooks
	}
}

// partitions returns the inbox partitions this process owns among the live ones.
func (e *Engine) partitions() []int {
	return lease.Assign(streams.InboxPartitions(e.cfg.Streams), e.members.Live(), e.cfg.Cluster.ProcessID)
}

// assignLoop gives the orchestrator the partitions of the live processes' latest view, and
// tries again while an assignment fails.
func (e *Engine) assignLoop(o *orchestrator.Orchestrator, m *lease.Members, kick, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	// An assignment in progress (draining a partition) is cut short by the stop.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	go func() {
		select {
		case <-stop:
			cancelBase()
		case <-base.Done():
		}
	}()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	failed := false
	for {
		select {
		case <-stop:
			return
		case <-kick:
		case <-retry.C:
			if !failed {
				continue
			}
		}
		want := lease.Assign(streams.InboxPartitions(e.cfg.Streams), m.Live(), e.cfg.Cluster.ProcessID)
		ctx, cancel := context.WithTimeout(base, 30*time.Second)
		err := o.Assign(ctx, want)
		if b := e.blobsAssigned.Load(); b != nil {
			err = errors.Join(err, b.Assign(ctx, want))
		}
		cancel()
		if failed = err != nil; failed {
			e.log.Warn("assign partitions; trying again", "err", err)
		}
	}
}

// stopAssigning stops the assign loop, if it runs; e.mu is held.
func (e *Engine) stopAssigning() {
	if e.assignDone == nil {
		return
	}
	close(e.assignStop)
	<-e.assignDone
	e.assignStop, e.assignDone = nil, nil
}

// Close stops the handlers, those that send commands first and the orchestrator last, so that
// the commands sent while stopping are still taken up. Work in progress finishes, or is handed
// back to the server when ctx ends first.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.open {
		return nil
	}
	e.open = false
	err := e.parts.Stop(ctx)
	e.reset()
	e.log.Info("engine closed")
	return err
}

// NotReadyError says which dependency keeps the engine from taking requests.
type NotReadyError struct {
	// Dependency is "nats", "streams" or "handlers".
	Dependency string
	Err        error
}

func (e *NotReadyError) Error() string { return e.Dependency + ": " + e.Err.Error() }
func (e *NotReadyError) Unwrap() error { return e.Err }

// Ready reports whether the engine can take requests: NATS is connected, the streams exist,
// and the handlers run. Its error is a *NotReadyError naming the first of them that is not.
func (e *Engine) Ready(ctx context.Context) error {
	if st := e.js.Conn().Status(); st != nats.CONNECTED {
		return &NotReadyError{Dependency: "nats", Err: fmt.Errorf("connection is %s", st)}
	}
	for _, cfg := range StreamConfigs(e.cfg.Streams) {
		if _, err := e.js.Stream(ctx, cfg.Name); err != nil {
			return &NotReadyError{Dependency: "streams", Err: fmt.Errorf("stream %s: %w", cfg.Name, err)}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.open {
		return &NotReadyError{Dependency: "handlers", Err: errors.New("the engine's handlers are not running")}
	}
	return nil
}

// Stats is what a process did and holds: the orchestrator's counters (OCC conflicts, cache
// hits and misses, history loads), the live processes, whether this one admits executions,
// and the reconciler's counters.
type Stats struct {
	ProcessID    string             `json:"process_id"`
	Orchestrator orchestrator.Stats `json:"orchestrator"`
	// Members are the live processes, as this one sees them.
	Members []string `json:"members"`
	// Leader is true while this process's dispatcher admits executions.
	Leader bool `json:"leader"`
	// Reconciler counts the reconciler's passes and re-issued timers, when it runs.
	Reconciler *reconciler.Stats `json:"reconciler,omitempty"`
	// Loops are the counters of the handlers' consume loops that run, by handler name.
	Loops map[string]consume.Stats `json:"loops,omitempty"`
	// Blobs counts the blob store's history loads, cache hits and misses and OCC conflicts,
	// when the blobs handler runs.
	Blobs *blobstore.Stats `json:"blobs,omitempty"`
	// BlobPartitions are the MEMMIE_BLOBS partitions this process consumes now.
	BlobPartitions []int `json:"blob_partitions,omitempty"`
	// Triggers counts the trigger matcher's requests and starts, when it runs.
	Triggers *triggers.Stats `json:"triggers,omitempty"`
	// Reports counts the runner's reports recorded in this process and those published to
	// the inbox, when the runner runs.
	Reports *runner.Reports `json:"reports,omitempty"`
}

// Stats returns the process's counters and roles. Counters count from Open; once the engine
// is closed, they are those of its last run.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{ProcessID: e.cfg.Cluster.ProcessID, Orchestrator: e.closed}
	if e.orchestrator != nil {
		st.Orchestrator = e.orchestrator.Stats()
	}
	if e.members != nil {
		st.Members = e.members.Live()
	}
	if e.dispatcher != nil {
		st.Leader = e.dispatcher.Leading()
	}
	if e.reconciler != nil {
		rs := e.reconciler.Stats()
		st.Reconciler = &rs
	}
	st.Loops = map[string]consume.Stats{}
	if e.orchestrator != nil {
		st.Loops[orchestrator.Name] = e.orchestrator.LoopStats()
	}
	if e.runner != nil {
		st.Loops[runner.Name] = e.runner.Stats()
		rs := e.runner.Reports()
		st.Reports = &rs
	}
	if e.timers != nil {
		st.Loops[timers.Name] = e.timers.Stats()
	}
	if e.blobs != nil {
		st.Loops[blobs.Name] = e.blobs.Stats()
		st.Loops[blobs.Name+"-outputs"] = e.blobs.OutputStats()
		bs := e.blobs.StoreStats()
		st.Blobs = &bs
		st.BlobPartitions = e.blobs.Partitions()
	}
	if e.triggers != nil {
		ts := e.triggers.Stats()
		st.Triggers = &ts
	}
	return st
}

// StartRequest asks for a new execution of a workflow.
type StartRequest struct {
	WorkflowID string
	// Input is the execution's input, any JSON; empty means null.
	Input json.RawMessage
	// Priority is 0 to 100; higher runs first.
	Priority int
	// IdempotencyKey, when set, names the execution: the same key always gives the same
	// execution (its id is the key's UUIDv5).
	IdempotencyKey string
	// MaxRetries is how many automatic re-runs a retryable failure gets, 0 to
	// MaxRetriesLimit.
	MaxRetries int
	// ProviderID, BlobID and SourceEventID record why the execution runs (blob triggers).
	ProviderID    string
	BlobID        string
	SourceEventID string
	// BaseVersion is the blob version a triggered execution's input holds, and Trigger the
	// provider's trigger that matched (workflows[0].triggers[1]).
	BaseVersion int64
	Trigger     string
	// ExecutionID, when set, names the execution (a trigger's deterministic id): a start
	// whose execution exists already queues nothing and returns created false, whatever
	// that execution was started with. It excludes IdempotencyKey.
	ExecutionID string
}

// Start queues an execution of the workflow's current revision, pinning the workflow and its
// schemas, and returns its id. An input that breaks the input schema is an *InputError, and
// nothing is queued. created is false when the idempotency key names an execution that exists
// already and was started with the same workflow, input, priority and max retries; with other
// ones the error is an *IdempotencyConflictError. With ExecutionID (a blob trigger's start),
// created is false when that execution exists, with no comparison. The dispatcher starts it
// when its priority's turn comes.
func (e *Engine) Start(ctx context.Context, req StartRequest) (executionID string, created bool, err error) {
	ev, data, err := e.prepare(req)
	if err != nil {
		return "", false, err
	}
	id := ev.Data.(*events.ExecutionQueued).ExecutionID
	// The queued event starts the history: it is appended only when the execution has no
	// event yet. A second start with the same key finds its own event there. It carries the
	// trace context of ctx's span (an API request's), which the execution's spans join.
	msg := stream.Msg{Subject: ev.Subject, Data: data, ID: ev.ID, Header: tracing.Inject(ctx, nil)}
	ack, err := stream.Append(ctx, e.js, streams.Executions, []stream.Msg{msg}, stream.Expect{FilterSubject: events.ExecutionFilter(id)})
	switch {
	case (errors.Is(err, stream.ErrConflict) || err == nil && ack.Duplicate) && req.ExecutionID != "":
		return id, false, nil // a trigger's execution, started before
	case errors.Is(err, stream.ErrConflict), err == nil && ack.Duplicate:
		// The key's execution exists: the same request again, or a conflict.
		if err := e.sameStart(ctx, ev); err != nil {
			return "", false, err
		}
		return id, false, nil
	case err != nil:
		return "", false, fmt.Errorf("start %s: %w", req.WorkflowID, err)
	}
	if o := e.seeder.Load(); o != nil {
		// The history is this one event, as of the append: the orchestrator, when it
		// advances the execution, starts from it rather than from a read of the stream.
		o.Seed(id, msg, ack.LastSeq)
	}
	q := ev.Data.(*events.ExecutionQueued)
	e.log.Info("execution queued", "execution_id", id, "workflow_id", q.WorkflowID, "workflow_revision", q.WorkflowRevision,
		"priority", req.Priority)
	return id, true, nil
}

// prepare checks a start and builds its queued event, encoded, without appending it: the
// registry look-ups, the input schema check and the envelope of Start.
func (e *Engine) prepare(req StartRequest) (events.Event, []byte, error) {
	if e.cfg.Definitions == nil {
		return events.Event{}, nil, ErrNoDefinitions
	}
	switch {
	case req.Priority < definitions.MinPriority || req.Priority > definitions.MaxPriority:
		return events.Event{}, nil, fmt.Errorf("%w: priority %d is not within %d to %d", ErrInvalid, req.Priority,
			definitions.MinPriority, definitions.MaxPriority)
	case req.MaxRetries < 0 || req.MaxRetries > MaxRetriesLimit:
		return events.Event{}, nil, fmt.Errorf("%w: max_retries %d is not within 0 to %d", ErrInvalid, req.MaxRetries, MaxRetriesLimit)
	case req.WorkflowID == "":
		return events.Event{}, nil, fmt.Errorf("%w: workflow_id is required", ErrInvalid)
	case req.ExecutionID != "" && req.IdempotencyKey != "":
		return events.Event{}, nil, fmt.Errorf("%w: an execution id and an idempotency key exclude each other", ErrInvalid)
	case req.BaseVersion < 0:
		return events.Event{}, nil, fmt.Errorf("%w: base_version %d is negative", ErrInvalid, req.BaseVersion)
	}
	if req.ExecutionID != "" {
		if err := events.ValidToken(req.ExecutionID); err != nil {
			return events.Event{}, nil, fmt.Errorf("%w: execution id: %v", ErrInvalid, err)
		}
	}
	var input any
	if len(req.Input) > 0 {
		if err := json.Unmarshal(req.Input, &input); err != nil {
			return events.Event{}, nil, fmt.Errorf("%w: input is not JSON: %v", ErrInvalid, err)
		}
	}

	rev, ok := e.cfg.Definitions.Current(definitions.KindWorkflow, req.WorkflowID)
	if !ok {
		return events.Event{}, nil, fmt.Errorf("%w: %q", ErrWorkflowNotFound, req.WorkflowID)
	}
	wf, ok := rev.Def.(*definitions.Workflow)
	if !ok {
		return events.Event{}, nil, fmt.Errorf("workflow %q: registry returned a %T", req.WorkflowID, rev.Def)
	}
	if !rev.Active || !wf.IsActive() {
		return events.Event{}, nil, fmt.Errorf("%w: %q", ErrWorkflowInactive, req.WorkflowID)
	}
	inSchema, err := e.schema(wf, "input", wf.InputSchemaID)
	if err != nil {
		return events.Event{}, nil, err
	}
	outSchema, err := e.schema(wf, "output", wf.OutputSchemaID)
	if err != nil {
		return events.Event{}, nil, err
	}
	if err := e.checkInput(wf, input); err != nil {
		return events.Event{}, nil, err
	}

	id, source := uuid.Must(uuid.NewV7()).String(), events.SourceAPI
	if req.Trigger != "" {
		source = events.SourceTriggers
	}
	switch {
	case req.IdempotencyKey != "":
		id = IDForKey(req.IdempotencyKey)
	case req.ExecutionID != "":
		id = req.ExecutionID
	}
	ev := events.NewExecution(&events.ExecutionQueued{
		ExecutionID:      id,
		WorkflowID:       wf.ID,
		WorkflowRevision: rev.Revision,
		Workflow:         rev.Canonical,
		InputSchema:      inSchema,
		OutputSchema:     outSchema,
		Input:            input,
		Priority:         req.Priority,
		MaxRetries:       req.MaxRetries,
		IdempotencyKey:   req.IdempotencyKey,
		ProviderID:       req.ProviderID,
		BlobID:           req.BlobID,
		SourceEventID:    req.SourceEventID,
		BaseVersion:      req.BaseVersion,
		Trigger:          req.Trigger,
		Seed:             seed(id),
	}, source, e.cfg.Now())
	data, err := events.Marshal(ev)
	if err != nil {
		return events.Event{}, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return ev, data, nil
}

// schema returns the canonical JSON of a schema a workflow names, or nil when it names none.
func (e *Engine) schema(wf *definitions.Workflow, what, id string) (json.RawMessage, error) {
	if id == "" {
		return nil, nil
	}
	rev, ok := e.cfg.Definitions.Current(definitions.KindSchema, id)
	if !ok || !rev.Active {
		return nil, fmt.Errorf("%w: the %s schema %q of workflow %q is not registered or not active", ErrWorkflowInactive, what, id, wf.ID)
	}
	return rev.Canonical, nil
}

// IDForKey returns the execution id of an idempotency key: its UUIDv5.
func IDForKey(key string) string { return events.ID("idempotency-key", key) }

// seed derives an execution's jitter seed from its id, so that it is the same however often
// the execution is queued.
func seed(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return int64(h.Sum64() >> 1)
}

// History returns an execution's events, in stream order.
func (e *Engine) History(ctx context.Context, id string) ([]events.Event, error) {
	if err := events.ValidToken(id); err != nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	msgs, err := stream.Load(ctx, e.js, streams.Executions, events.ExecutionFilter(id))
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", id, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	history, err := orchestrator.Decode(msgs)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", id, err)
	}
	return history, nil
}

// Execution returns an execution's state, folded from its history. Its JSON form is the view
// the API serves.
func (e *Engine) Execution(ctx context.Context, id string) (*execution.State, error) {
	history, err := e.History(ctx, id)
	if err != nil {
		return nil, err
	}
	s, err := execution.Fold(history)
	if err != nil {
		return nil, fmt.Errorf("state of %s: %w", id, err)
	}
	return &s, nil
}

// Cancel asks to cancel an execution: what succeeded is compensated, in reverse order, then it
// ends cancelled. It returns once the request is queued; ErrState when the execution has
// ended.
func (e *Engine) Cancel(ctx context.Context, id, reason string) error {
	s, err := e.Execution(ctx, id)
	if err != nil {
		return err
	}
	if s.Status.Terminal() {
		return fmt.Errorf("%w: cancel: execution %s is %s", ErrState, id, s.Status)
	}
	if s.CancelRequested {
		return nil
	}
	ev := events.NewExecution(&events.CancelRequested{ExecutionID: id, Run: s.Run, Reason: reason}, events.SourceAPI, e.cfg.Now())
	if err := inbox.Publish(ctx, e.js, ev); err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	e.log.Info("cancel requested", "execution_id", id, "workflow_id", s.WorkflowID, "reason", reason)
	return nil
}

// Retry asks to re-run a failed execution from its failed step: steps that succeeded and were
// not compensated keep their results. It returns once the request is queued; ErrState when
// the execution has not failed.
func (e *Engine) Retry(ctx context.Context, id string) error {
	s, err := e.Execution(ctx, id)
	if err != nil {
		return err
	}
	if s.Status != execution.StatusFailed {
		return fmt.Errorf("%w: retry: execution %s is %s, not failed", ErrState, id, s.Status)
	}
	ev := events.NewExecution(&events.RetryRequested{ExecutionID: id, Run: s.Run}, events.SourceAPI, e.cfg.Now())
	if err := inbox.Publish(ctx, e.js, ev); err != nil {
		return fmt.Errorf("retry %s: %w", id, err)
	}
	e.log.Info("retry requested", "execution_id", id, "workflow_id", s.WorkflowID, "run", s.Run)
	return nil
}

// Queue returns the queued executions in the order the dispatcher will start them, and how
// many run. It is empty when this engine runs no dispatcher.
func (e *Engine) Queue() (queued []dispatcher.Entry, running int) {
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil {
		return nil, 0
	}
	return d.Queue(), d.Running()
}
