package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/projections"
)

// The parts of a run, which Config.Skip names.
const (
	PartCeilings   = "ceilings"
	PartSaturation = "saturation"
	PartLatency    = "latency" // start to completed
	PartBlobs      = "blobs"   // blob event to last delta
	PartRebuild    = "rebuild"
)

// Parts are the parts of a run, in the order they run.
var Parts = []string{PartCeilings, PartSaturation, PartRebuild, PartLatency, PartBlobs}

// Defaults of Config.
const (
	DefaultDuration        = 2 * time.Minute
	DefaultExecutions      = 20_000
	DefaultSteps           = 3
	DefaultLatencyDuration = 10 * time.Second
	DefaultSerial          = 200
	DefaultCeiling         = 2 * time.Second
	DefaultConcurrency     = 32
	DefaultProfileEvery    = time.Minute
	// MaxSteps bounds Config.Steps.
	MaxSteps = 50
)

// DefaultLoads are the offered loads of the latency runs, per second.
var DefaultLoads = []int{100, 500}

// Config says what to measure, and on what.
type Config struct {
	// URL is the NATS server's client URL: a server with JetStream of the bench's own.
	// Required.
	URL string
	// NATSOptions are the options of the bench's connections (name, credentials, inbox
	// prefix). Defaults to none.
	NATSOptions []nats.Option
	// Pool is the projections' database, migrated. Required.
	Pool *pgxpool.Pool
	// Projections run while it measures, as memmie dev runs them; the executions projection
	// among them is rebuilt. Defaults to none: no lag is measured and nothing is rebuilt.
	Projections []projections.Projection
	// Streams varies the streams as memmie's --replicas and --partitions do. Defaults to
	// memmie's defaults.
	Streams streams.Options
	// MaxRunning is memmie's --max-running. Defaults to dispatcher.DefaultMaxRunning.
	MaxRunning int
	// SyncAlways says, in the report, that the server flushes every write to disk before it
	// acknowledges it (the caller starts the server). Defaults to false.
	SyncAlways bool

	// Duration is how long the saturation run is sustained, before its drain. Defaults to
	// DefaultDuration.
	Duration time.Duration
	// Executions are queued or running at all times of the saturation run. Defaults to
	// DefaultExecutions.
	Executions int
	// Steps are the api_call steps of the workflow, 1 to MaxSteps. Defaults to DefaultSteps.
	Steps int
	// Loads are the offered loads of the latency runs, per second, after the run one at a
	// time. Defaults to DefaultLoads.
	Loads []int
	// LatencyDuration bounds each latency run. Defaults to DefaultLatencyDuration.
	LatencyDuration time.Duration
	// Serial is the samples of the latency runs one at a time (within LatencyDuration).
	// Defaults to DefaultSerial.
	Serial int
	// Ceiling is how long each ceiling is measured. Defaults to DefaultCeiling.
	Ceiling time.Duration
	// Concurrency is the publishers of the concurrent ceilings. Defaults to
	// DefaultConcurrency.
	Concurrency int
	// Skip names parts not to run (see Parts). Defaults to none.
	Skip []string

	// CPUProfile, when set, receives the CPU profile of the saturation run and its drain, and
	// AllocProfile the allocations profile at its end, which counts from the start of the
	// process (pprof's formats). Default to none.
	CPUProfile, AllocProfile io.Writer
	// ProfileDir, when set, receives a CPU profile of every ProfileEvery of the saturation run
	// and its drain (cpu-<from>s.pb.gz) and a heap profile at the end of each
	// (heap-<at>s.pb.gz), to compare the start of a long run with its end. It excludes
	// CPUProfile. Defaults to none.
	ProfileDir string
	// ProfileEvery is the span of ProfileDir's profiles. Defaults to DefaultProfileEvery.
	ProfileEvery time.Duration

	// Progress receives a line per phase, and every few seconds of the long ones. Defaults
	// to none.
	Progress io.Writer
	// ProgressEvery is how often the long phases report. Defaults to 5 seconds.
	ProgressEvery time.Duration
	// Logger receives the engine's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate checks the shape of the run (all but URL and Pool), so that a command can refuse
// bad flags before it starts the servers.
func (c *Config) Validate() error {
	switch {
	case c.Duration < 0, c.LatencyDuration < 0, c.Ceiling < 0, c.ProgressEvery < 0, c.ProfileEvery < 0:
		return errors.New("bench: durations must not be negative")
	case c.ProfileDir != "" && c.CPUProfile != nil:
		return errors.New("bench: Config.ProfileDir and CPUProfile exclude each other (one CPU profile at a time)")
	case c.Executions < 0:
		return fmt.Errorf("bench: Config.Executions %d is negative", c.Executions)
	case c.Steps < 0 || c.Steps > MaxSteps:
		return fmt.Errorf("bench: Config.Steps %d is not within 1 to %d", c.Steps, MaxSteps)
	case c.Serial < 0, c.Concurrency < 0, c.MaxRunning < 0:
		return errors.New("bench: Config.Serial, Concurrency and MaxRunning must not be negative")
	}
	for _, l := range c.Loads {
		if l <= 0 || l > 100_000 {
			return fmt.Errorf("bench: load %d/s is not within 1 to 100000", l)
		}
	}
	for _, s := range c.Skip {
		if !slices.Contains(Parts, s) {
			return fmt.Errorf("bench: unknown part %q to skip (parts: %s)", s, strings.Join(Parts, ", "))
		}
	}
	return nil
}

func (c *Config) defaults() error {
	switch {
	case c.URL == "":
		return errors.New("bench: Config.URL is required")
	case c.Pool == nil:
		return errors.New("bench: Config.Pool is required")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	c.MaxRunning = cmp.Or(c.MaxRunning, dispatcher.DefaultMaxRunning)
	c.Duration = cmp.Or(c.Duration, DefaultDuration)
	c.Executions = cmp.Or(c.Executions, DefaultExecutions)
	c.Steps = cmp.Or(c.Steps, DefaultSteps)
	if c.Loads == nil {
		c.Loads = DefaultLoads
	}
	c.LatencyDuration = cmp.Or(c.LatencyDuration, DefaultLatencyDuration)
	c.Serial = cmp.Or(c.Serial, DefaultSerial)
	c.Ceiling = cmp.Or(c.Ceiling, DefaultCeiling)
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.Streams.Partitions = cmp.Or(c.Streams.Partitions, streams.DefaultPartitions)
	c.ProgressEvery = cmp.Or(c.ProgressEvery, 5*time.Second)
	c.ProfileEvery = cmp.Or(c.ProfileEvery, DefaultProfileEvery)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// bench is one run.
type bench struct {
	cfg    Config
	log    *slog.Logger
	began  time.Time
	nc     *nats.Conn // the engine's
	js     jetstream.JetStream
	client *nats.Conn // the load's: starts, blob events, subscriptions
	cjs    jetstream.JetStream
	eng    *engine.Engine
	ends   *ends
	deltas *deltaWaits
	// lag reads the projections' lag as /metrics does.
	lag     *lagReader
	runners []*projections.Runner
	// names are the memmie streams, whose growth is the stored messages.
	names []string
}

func (b *bench) skip(part string) bool { return slices.Contains(b.cfg.Skip, part) }

// progress writes a line: the phase, the time since the run began, and what it says.
func (b *bench) progress(phase, format string, args ...any) {
	el := time.Since(b.began).Round(time.Second)
	fmt.Fprintf(b.cfg.Progress, "bench %5s  %-11s %s\n", el, phase, fmt.Sprintf(format, args...))
}

// Run measures what cfg says and returns the report. It stops at the first failure; ctx ends
// it early with ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, log: cfg.Logger, began: time.Now()}
	rep := &Report{Began: b.began, Machine: machine(ctx, cfg), Settings: Settings{
		DurationSeconds: cfg.Duration.Seconds(), Executions: cfg.Executions, Steps: cfg.Steps, Loads: cfg.Loads,
		LatencyDurationSeconds: cfg.LatencyDuration.Seconds(), Serial: cfg.Serial, MaxRunning: cfg.MaxRunning,
		Partitions: cfg.Streams.Partitions, SyncAlways: cfg.SyncAlways, Skipped: cfg.Skip}}
	defer func() { rep.TookSeconds = time.Since(b.began).Seconds() }()

	var err error
	if b.nc, err = nats.Connect(cfg.URL, append(slices.Clone(cfg.NATSOptions), nats.Name("memmie bench engine"))...); err != nil {
		return nil, fmt.Errorf("bench: connect to %s: %w", cfg.URL, err)
	}
	defer b.nc.Close()
	if b.client, err = nats.Connect(cfg.URL, append(slices.Clone(cfg.NATSOptions), nats.Name("memmie bench client"))...); err != nil {
		return nil, fmt.Errorf("bench: connect to %s: %w", cfg.URL, err)
	}
	defer b.client.Close()
	if b.js, err = jetstream.New(b.nc); err != nil {
		return nil, fmt.Errorf("bench: jetstream: %w", err)
	}
	if b.cjs, err = jetstream.New(b.client); err != nil {
		return nil, fmt.Errorf("bench: jetstream: %w", err)
	}
	configs := engine.StreamConfigs(cfg.Streams)
	for _, c := range configs {
		b.names = append(b.names, c.Name)
	}
	if err := stream.Ensure(ctx, b.js, configs, b.log); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}

	// The ceilings first, on a server and a database that do nothing else yet.
	if !b.skip(PartCeilings) {
		if rep.Ceilings, err = b.ceilings(ctx); err != nil {
			return rep, err
		}
	}

	stop, err := b.open(ctx)
	if err != nil {
		return rep, err
	}
	defer stop()

	var sat *saturationRun
	if !b.skip(PartSaturation) {
		if sat, err = b.saturation(ctx); err != nil {
			return rep, err
		}
		rep.Saturation, rep.Resources = sat.report(rep.Ceilings)
	}
	if len(b.runners) > 0 && (sat != nil || !b.skip(PartRebuild)) {
		p := &Projections{}
		if sat != nil {
			p.MaxLagSeconds, p.LagSamples = sat.maxLag, sat.lagSamples
		}
		if p.CatchUpSeconds, err = b.catchUp(ctx); err != nil {
			return rep, err
		}
		if !b.skip(PartRebuild) {
			if err := b.rebuild(ctx, p, rep.Ceilings); err != nil {
				return rep, err
			}
		}
		rep.Projections = p
	}
	if !b.skip(PartLatency) || !b.skip(PartBlobs) {
		rep.Latency = &Latency{}
	}
	if !b.skip(PartLatency) {
		if rep.Latency.StartToCompleted, err = b.latency(ctx, "latency", b.startOne); err != nil {
			return rep, err
		}
	}
	if !b.skip(PartBlobs) {
		if rep.Latency.BlobToLastDelta, err = b.latency(ctx, "blobs", b.publishOne); err != nil {
			return rep, err
		}
	}
	if rep.Resources != nil {
		rep.Resources.PeakRSSBytes = peakRSS()
	}
	b.progress("done", "in %s", time.Since(b.began).Round(time.Second))
	return rep, nil
}

// open starts what the workflow runs on, as memmie dev does: the registry with the bench's
// definitions, the HTTP service, the projections' runners and the engine. stop ends them.
func (b *bench) open(ctx context.Context) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range slices.Backward(stops) {
			s()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	svcURL, closeSvc, err := startService()
	if err != nil {
		return nil, err
	}
	stops = append(stops, closeSvc)
	svcs, err := services.NewRegistry(services.Service{Name: serviceName, BaseURL: svcURL})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}

	reg, err := registry.New(b.js, registry.Config{Logger: b.log})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := reg.Start(ctx); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	stops = append(stops, func() { _ = reg.Stop(context.Background()) })
	defs, err := definitionsOf(b.cfg.Steps)
	if err != nil {
		return nil, err
	}
	if _, err := reg.Register(ctx, defs...); err != nil {
		return nil, fmt.Errorf("bench: register the definitions: %w", err)
	}

	// The projections start before the engine and stop after it, as in memmie dev.
	if len(b.cfg.Projections) > 0 {
		plog := b.log.With("component", "projections")
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		var wg sync.WaitGroup
		for _, p := range b.cfg.Projections {
			r, err := projections.NewRunner(p, projections.Config{Pool: b.cfg.Pool, JS: b.js, Log: plog})
			if err != nil {
				cancel()
				return nil, fmt.Errorf("bench: %w", err)
			}
			b.runners = append(b.runners, r)
			wg.Go(func() { _ = r.Run(runCtx) })
		}
		stops = append(stops, func() { cancel(); wg.Wait() })
		if b.lag, err = newLagReader(b.js, b.runners); err != nil {
			return nil, err
		}
	}

	// The engine as memmie dev builds it: its caller with /metrics around it.
	caller, err := services.NewCaller(services.Config{Registry: svcs, MaxResponseBytes: runner.DefaultMaxResponseBytes})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	stops = append(stops, caller.Close)
	eng, err := engine.New(b.js, engine.Config{
		Definitions:  reg,
		Services:     svcs,
		Caller:       metrics.NewCalls(caller),
		Streams:      b.cfg.Streams,
		Dispatcher:   dispatcher.Config{MaxRunning: b.cfg.MaxRunning},
		Orchestrator: orchestrator.Config{Observer: metrics.NewExecutions()},
		Logger:       b.log,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := eng.Open(ctx); err != nil {
		return nil, fmt.Errorf("bench: open the engine: %w", err)
	}
	stops = append(stops, func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := eng.Close(stopCtx); err != nil {
			b.log.Warn("stop the engine", "err", err)
		}
	})
	b.eng = eng

	if b.ends, err = watchEnds(b.client); err != nil {
		return nil, err
	}
	stops = append(stops, b.ends.stop)
	if b.deltas, err = watchDeltas(b.client); err != nil {
		return nil, err
	}
	stops = append(stops, b.deltas.stop)
	// Subscriptions are live once the server has them.
	if err := b.client.FlushTimeout(10 * time.Second); err != nil {
		return nil, fmt.Errorf("bench: flush the subscriptions: %w", err)
	}
	// The engine takes its partitions as it opens; the work waits for them.
	if err := waitFor(ctx, time.Minute, func() bool {
		return len(eng.Stats().Orchestrator.Partitions) == b.cfg.Streams.Partitions
	}); err != nil {
		return nil, fmt.Errorf("bench: the engine did not take its %d partitions: %w", b.cfg.Streams.Partitions, err)
	}
	return stop, nil
}

// waitFor polls cond every 10 ms until it holds, within d.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// machine describes the machine and the servers.
func machine(ctx context.Context, cfg Config) Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
		NATSServer: server.VERSION}
	if cfg.Pool != nil {
		var v string
		if err := cfg.Pool.QueryRow(ctx, `SHOW server_version`).Scan(&v); err == nil {
			m.Postgres = "PostgreSQL " + strings.Fields(v)[0]
		}
	}
	return m
}
