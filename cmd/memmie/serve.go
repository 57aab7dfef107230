package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/blobs"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/internal/app/ui"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
	"github.com/memmie/memmie/internal/tracing"
	"github.com/memmie/memmie/projections"
)

// Defaults of dev and serve.
const (
	defaultHTTPAddr    = "127.0.0.1:8080"
	defaultNATSURL     = "nats://127.0.0.1:4222"
	defaultDefinitions = "./definitions"
	// shutdownTimeout bounds a clean stop: work in progress finishes or is handed back.
	shutdownTimeout = 30 * time.Second
)

// runtimeOptions are the flags dev and serve share.
type runtimeOptions struct {
	httpAddr    string
	definitions string
	services    string
	maxRunning  int
	// maxDerivationDepth bounds chains of derived blobs that trigger (trigger.Config).
	maxDerivationDepth int
	replicas           int
	partitions         int
	processID          string
	logLevel           string
	// logFormat is text or json.
	logFormat string
	// otelEndpoint is the OTLP/HTTP collector traces are sent to; none (tracing off) when
	// empty and OTEL_EXPORTER_OTLP_ENDPOINT is unset.
	otelEndpoint string
	// natsUser and natsPassword authenticate the connection (the engine user of nats.conf).
	natsUser     string
	natsPassword string
	// natsPasswordFile holds the password instead: a command line is visible to every user
	// of the machine (ps, /proc), a file or the environment is not.
	natsPasswordFile string
	// apiToken, when set, guards the API (but /healthz, /readyz and /metrics).
	apiToken string
	// databaseURL is the Postgres database of the projections, migrated at start; none when
	// empty.
	databaseURL string
}

// resolveSecrets reads --nats-password-file into natsPassword, and warns when --nats-password
// or --api-token was given on the command line rather than through the environment.
func (o *runtimeOptions) resolveSecrets(flags *pflag.FlagSet, log *slog.Logger) error {
	if fromCommandLine(flags.Lookup("nats-password")) {
		log.Warn("--nats-password on the command line is visible to every user of this machine (ps); use --nats-password-file or " +
			envName("nats-password"))
	}
	if fromCommandLine(flags.Lookup("api-token")) {
		log.Warn("--api-token on the command line is visible to every user of this machine (ps); use " + envName("api-token"))
	}
	if o.natsPasswordFile == "" {
		return nil
	}
	if o.natsPassword != "" {
		return errors.New("--nats-password and --nats-password-file are both given: give one")
	}
	b, err := os.ReadFile(o.natsPasswordFile)
	if err != nil {
		return fmt.Errorf("--nats-password-file: %w", err)
	}
	// A file written by echo or an editor ends in a newline, which is not part of the password.
	o.natsPassword = strings.TrimRight(string(b), "\r\n")
	if o.natsPassword == "" {
		return fmt.Errorf("--nats-password-file %s is empty", o.natsPasswordFile)
	}
	return nil
}

// natsOptions returns the options of memmie's connection to NATS, named name.
func (o *runtimeOptions) natsOptions(name string) []nats.Option {
	return append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.CustomInboxPrefix(events.EngineInboxPrefix)},
		o.natsAuth()...)
}

// natsAuth returns the connection option of --nats-user and --nats-password, or nil.
func (o *runtimeOptions) natsAuth() []nats.Option {
	if o.natsUser == "" && o.natsPassword == "" {
		return nil
	}
	return []nats.Option{nats.UserInfo(o.natsUser, o.natsPassword)}
}

func (o *runtimeOptions) addFlags(f *pflag.FlagSet, definitionsDefault, logLevelDefault string) {
	f.StringVar(&o.httpAddr, "http-addr", defaultHTTPAddr, "address of the HTTP API")
	f.StringVar(&o.definitions, "definitions", definitionsDefault, "directory of definitions to register at start-up")
	f.StringVar(&o.services, "services", "", "YAML file of the services workflows call (base_url, headers, timeout_seconds)")
	f.IntVar(&o.maxRunning, "max-running", dispatcher.DefaultMaxRunning, "maximum number of executions running at once")
	f.IntVar(&o.maxDerivationDepth, "max-derivation-depth", trigger.DefaultMaxDerivationDepth,
		"derivations from a client's blob that still trigger workflows: a blob derived more often is recorded and starts nothing, which ends loops of workflows deriving blobs from their own")
	f.IntVar(&o.replicas, "replicas", 1, "replicas of every stream (3 on a cluster)")
	f.IntVar(&o.partitions, "partitions", streams.DefaultPartitions,
		"partitions of the orchestrator's inbox, shared out over the processes (the same in every process)")
	f.StringVar(&o.processID, "process-id", "",
		"name of this process among those sharing the work (default: host name and a random suffix); a process restarted with the same name takes its share back (at once after a clean stop, within about half the TTL after a crash); a second live process with the same name is refused")
	f.StringVar(&o.logLevel, "log-level", logLevelDefault, "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json (one JSON object a line, with trace_id and span_id when traced)")
	f.StringVar(&o.otelEndpoint, "otel-endpoint", "",
		"OpenTelemetry collector (OTLP/HTTP) to send traces to, e.g. http://localhost:4318; defaults to $OTEL_EXPORTER_OTLP_ENDPOINT; tracing is off without either")
	f.StringVar(&o.natsUser, "nats-user", "", "NATS user (e.g. the engine user of nats.conf)")
	f.StringVar(&o.natsPassword, "nats-password", "", "password of --nats-user; on the command line every user of the machine sees it (ps): prefer --nats-password-file or the environment")
	f.StringVar(&o.natsPasswordFile, "nats-password-file", "", "file holding the password of --nats-user (a final newline is ignored)")
	f.StringVar(&o.apiToken, "api-token", "", "bearer token every API request must carry (Authorization: Bearer <token>), but /healthz, /readyz and /metrics; none by default; on the command line every user of the machine sees it (ps): prefer the environment")
}

func newServeCmd() *cobra.Command {
	var (
		o         runtimeOptions
		natsURL   string
		natsCreds string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the handlers and the API against a NATS server",
		Long: `Runs memmie's handlers (orchestrator, step runner, timers, dispatcher) and the HTTP
API against the NATS server or cluster at --nats-url. It starts no embedded server. It
creates the streams that are missing and never rewrites existing ones: a difference in
partitions, replicas or storage stops the start and names the fix ('memmie streams update');
other differences are logged. It registers definitions only when --definitions is given.
With --database-url it applies the Postgres migrations the database has not had yet before it
serves (processes starting at once take turns under an advisory lock) and runs the executions
projection (of all the processes, the one holding its advisory lock writes), which GET
/v1/executions and 'memmie executions list' read; without one it runs without Postgres. Ctrl-C stops it cleanly: work in progress finishes or is handed back to the
server.

Workflows call the services of --services, and those named by environment variables
MEMMIE_SERVICE_<NAME>_URL (which override the file's base_url of the same name).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newRuntimeLogger(cmd.ErrOrStderr(), o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			if err := o.resolveSecrets(cmd.Flags(), log); err != nil {
				return err
			}
			set, err := loadDefinitions(cmd.OutOrStdout(), o.definitions, o.definitions != "")
			if err != nil {
				return err
			}
			svcs, err := loadServices(o.services)
			if err != nil {
				return err
			}
			opts := o.natsOptions("memmie serve")
			if natsCreds != "" {
				opts = append(opts, nats.UserCredentials(natsCreds))
			}
			nc, err := nats.Connect(natsURL, opts...)
			if err != nil {
				return fmt.Errorf("connect to %s: %w", natsURL, err)
			}
			defer nc.Close()
			return runRuntime(cmd.Context(), cmd.OutOrStdout(), log, nc, set, svcs, o, "")
		},
	}
	f := cmd.Flags()
	f.StringVar(&natsURL, "nats-url", defaultNATSURL, "NATS server or cluster to connect to")
	f.StringVar(&natsCreds, "nats-creds", "", "NATS credentials file")
	f.StringVar(&o.databaseURL, "database-url", "", "Postgres database, migrated at start, e.g. postgres://user:pass@host:5432/memmie; none by default")
	o.addFlags(f, "", "info")
	return cmd
}

// runRuntime migrates the database (if any), registers the definitions, runs the engine and
// the API until ctx ends, then stops them. natsURL, when set, is printed as where NATS clients
// connect.
func runRuntime(ctx context.Context, out io.Writer, log *slog.Logger, nc *nats.Conn, set *definitions.Set,
	svcs *services.Registry, o runtimeOptions, natsURL string) error {
	if o.maxDerivationDepth < 1 {
		// 0 would silently mean trigger.Config's default (3).
		return fmt.Errorf("--max-derivation-depth %d: want 1 or more", o.maxDerivationDepth)
	}
	if o.databaseURL != "" {
		if _, err := migrateDatabase(ctx, out, o.databaseURL, "the database"); err != nil {
			return err
		}
	} else {
		log.Info("no database configured (--database-url, " + envName("database-url") + "): running without Postgres")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	streamOpts := streams.Options{Replicas: o.replicas, Partitions: o.partitions}
	if err := stream.Ensure(startCtx, js, engine.StreamConfigs(streamOpts), log); err != nil {
		return err
	}

	// The projections start before the engine, so that they stop after it (the defers run in
	// reverse) and fold the events of its last moments too.
	var (
		vs      *views.Views
		ping    func(context.Context) error
		runners []*projections.Runner
	)
	if o.databaseURL != "" {
		pcfg, err := pgxpool.ParseConfig(o.databaseURL)
		if err != nil {
			return fmt.Errorf("database url: %w", err)
		}
		// Each projection's runner holds a connection for its advisory lock and writes on
		// it; the queries of the API share the rest.
		plog := log.With("component", "projections")
		ps := runProjections(plog)
		pcfg.MaxConns = max(pcfg.MaxConns, int32(len(ps)+4))
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return fmt.Errorf("connect to the database: %w", err)
		}
		defer pool.Close()
		var stop func()
		runners, stop, err = startProjections(ctx, pool, js, ps, plog)
		if err != nil {
			return err
		}
		defer stop()
		vs, ping = views.New(pool), pool.Ping
	}

	reg, err := registry.New(js, registry.Config{Logger: log})
	if err != nil {
		return err
	}
	if err := reg.Start(startCtx); err != nil {
		return err
	}
	defer func() { _ = reg.Stop(context.Background()) }()
	var results []registry.Result
	if set != nil {
		if results, err = reg.RegisterSet(startCtx, set); err != nil {
			var probs definitions.Problems
			if errors.As(err, &probs) {
				for _, p := range probs {
					fmt.Fprintln(out, p.String())
				}
				return &exitError{code: 1, msg: fmt.Sprintf("memmie: %d problems in the definitions; nothing started", len(probs))}
			}
			return fmt.Errorf("register definitions: %w", err)
		}
	}

	// Tracing stops after the engine (the defers run in reverse), sending its last spans.
	tp, stopTracing, err := startTracing(ctx, o, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	// The engine's own caller, with /metrics timing its calls.
	caller, err := services.NewCaller(services.Config{Registry: svcs, MaxResponseBytes: runner.DefaultMaxResponseBytes,
		TracerProvider: tp})
	if err != nil {
		return err
	}
	defer caller.Close()
	calls := metrics.NewCalls(caller)
	// The durations of the executions this process's orchestrator ends.
	durations := metrics.NewExecutions()
	// The latency from a blob event to the last delta of each execution it triggered.
	outputs := metrics.NewBlobOutputs()
	// The trigger matcher's router registers its Watermill metrics here, served beside the
	// engine's.
	routers := prometheus.NewRegistry()
	eng, err := engine.New(js, engine.Config{
		Definitions:  reg,
		Services:     svcs,
		Caller:       calls,
		Streams:      streamOpts,
		Dispatcher:   dispatcher.Config{MaxRunning: o.maxRunning},
		Orchestrator: orchestrator.Config{Observer: durations},
		Blobs:        blobs.Config{Observer: outputs},
		Triggers: triggers.Config{Trigger: trigger.Config{MaxDerivationDepth: o.maxDerivationDepth},
			Metrics: routers},
		Cluster:        engine.Cluster{ProcessID: o.processID},
		TracerProvider: tp,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	if err := eng.Open(startCtx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := eng.Close(stopCtx); err != nil {
			log.Error("stop engine", "err", err)
		}
	}()

	collectors := []prometheus.Collector{calls, durations, outputs}
	if vs != nil {
		// The projections' lag and the executions by status, read at each scrape.
		projs, err := metrics.NewProjections(metrics.ProjectionsConfig{JS: js, Runners: runners, Tables: vs})
		if err != nil {
			return err
		}
		collectors = append(collectors, projs)
	}
	cfg := api.Config{Registry: reg, Engine: eng, JetStream: js, Logger: log, Token: o.apiToken, TracerProvider: tp,
		Metrics:  metrics.Handler(prometheus.Gatherers{metrics.NewRegistry(eng, collectors...), routers}),
		Redriver: deadletter.NewWriter(js, deadletter.Config{})}
	if vs != nil {
		cfg.Views = vs // a nil *views.Views in the interface would not read as none
		cfg.Postgres = ping
	}
	apiHandler, err := api.New(cfg)
	if err != nil {
		return err
	}
	// The web UI, under /ui/ on the same server, with the same dependencies and token.
	webUI, err := ui.New(ui.Config{Registry: reg, Engine: eng, Views: cfg.Views, Redriver: cfg.Redriver,
		Token: o.apiToken, MaxRunning: o.maxRunning, Logger: log})
	if err != nil {
		return err
	}
	handler := http.NewServeMux()
	handler.Handle(ui.Prefix, webUI)
	handler.Handle("/", apiHandler)
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.httpAddr, err)
	}
	// Timeouts and the header limit: see api.ServerConfig's defaults.
	srv := api.NewServer(handler, api.ServerConfig{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if natsURL != "" {
		fmt.Fprintf(out, "NATS: %s\n", natsURL)
	}
	if o.databaseURL != "" {
		fmt.Fprintf(out, "Postgres: %s\n", redactDatabaseURL(o.databaseURL))
	}
	fmt.Fprintf(out, "HTTP: http://%s\n", ln.Addr())
	fmt.Fprintf(out, "UI: http://%s/ui/\n", ln.Addr())
	printRegistered(out, results)
	fmt.Fprintf(out, "services: %s\n", describeServices(svcs))
	fmt.Fprintln(out, "ready; Ctrl-C stops")

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	}
	fmt.Fprintln(out, "stopping")
	stopCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(stopCtx); err != nil {
		log.Warn("stop http server", "err", err)
	}
	return nil
}

// runProjections are the projections dev and serve run.
func runProjections(log *slog.Logger) []projections.Projection {
	return []projections.Projection{projections.NewExecutions(log), projections.NewQueued(log), projections.NewSteps(log),
		projections.NewDefinitions(log), projections.NewDeadLetters(log), projections.NewBlobs(log)}
}

// startProjections runs the projections' runners until the returned stop is called: it ends
// them and waits for them. Of the runners of a projection in every process, the one holding its
// advisory lock writes and the others stand by.
func startProjections(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, ps []projections.Projection,
	plog *slog.Logger) (runners []*projections.Runner, stop func(), err error) {
	for _, p := range ps {
		r, err := projections.NewRunner(p, projections.Config{Pool: pool, JS: js, Log: plog})
		if err != nil {
			return nil, nil, err
		}
		runners = append(runners, r)
	}
	// Not ctx: Ctrl-C ends ctx, and the runners go on until the engine has stopped.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Go(func() {
			_ = r.Run(runCtx) // logs and retries its failures; returns when runCtx ends
		})
	}
	return runners, func() {
		cancel()
		wg.Wait()
	}, nil
}

// redactDatabaseURL hides the password of a postgres:// URL; a keyword/value connection string
// (host=... password=...) is not printed at all.
func redactDatabaseURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(the connection string of --database-url)"
	}
	return u.Redacted()
}

func printRegistered(out io.Writer, results []registry.Result) {
	if len(results) == 0 {
		fmt.Fprintln(out, "registered: nothing")
		return
	}
	fmt.Fprintln(out, "registered:")
	for _, r := range results {
		state := "unchanged"
		if r.Changed {
			state = "new revision"
		}
		fmt.Fprintf(out, "  %s %s revision %d (%s)\n", r.Kind, r.ID, r.Revision, state)
	}
}

func describeServices(reg *services.Registry) string {
	names := reg.Names()
	if len(names) == 0 {
		return "none (api_call steps fail with unknown_service)"
	}
	var parts []string
	for _, n := range names {
		s, _ := reg.Lookup(n)
		parts = append(parts, n+"="+s.BaseURL.Redacted())
	}
	return strings.Join(parts, ", ")
}

// loadDefinitions reads the definitions directory. When dir is empty, nothing is registered.
// A directory that does not exist is an error only when required; an invalid set prints every
// problem and stops the start.
func loadDefinitions(out io.Writer, dir string, required bool) (*definitions.Set, error) {
	if dir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && !required {
		fmt.Fprintf(out, "no definitions directory %s; registering nothing\n", dir)
		return nil, nil
	}
	set, err := definitions.Load(dir)
	var probs definitions.Problems
	switch {
	case errors.As(err, &probs):
		for _, p := range probs {
			fmt.Fprintln(out, p.String())
		}
		return nil, &exitError{code: 1, msg: fmt.Sprintf("memmie: %d problems in %s; nothing started", len(probs), dir)}
	case err != nil:
		return nil, fmt.Errorf("load definitions: %w", err)
	}
	return set, nil
}

// loadServices reads --services and lays MEMMIE_SERVICE_<NAME>_URL over it.
func loadServices(file string) (*services.Registry, error) {
	var fromFile *services.Registry
	if file != "" {
		var err error
		if fromFile, err = services.LoadFile(file); err != nil {
			return nil, err
		}
	}
	fromEnv, err := services.FromEnv(os.Environ())
	if err != nil {
		return nil, err
	}
	return services.Merge(fromFile, fromEnv), nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	return newRuntimeLogger(w, level, "text")
}

// newRuntimeLogger is a logger of --log-level and --log-format, whose records logged with a
// traced context carry trace_id and span_id.
func newRuntimeLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return slog.New(tracing.NewLogHandler(h)), nil
}

// startTracing returns the tracer provider of --otel-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)
// and its shutdown, which sends the spans not yet sent; nil and a no-op without an endpoint.
func startTracing(ctx context.Context, o runtimeOptions, log *slog.Logger) (trace.TracerProvider, func(), error) {
	endpoint := cmp.Or(o.otelEndpoint, os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if endpoint == "" {
		return nil, func() {}, nil
	}
	tp, err := tracing.Export(ctx, endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("--otel-endpoint: %w", err)
	}
	log.Info("sending traces", "endpoint", endpoint)
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("stop tracing", "err", err)
		}
	}, nil
}
