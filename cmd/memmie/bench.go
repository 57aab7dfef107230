package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/bench"
	"github.com/memmie/memmie/internal/natsserver"
)

func newBenchCmd() *cobra.Command {
	var (
		cfg         bench.Config
		asJSON      bool
		loads       string
		skip        []string
		dataDir     string
		out         string
		databaseURL string
		logLevel    string
		cpuProfile  string
		allocs      string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure memmie on this machine: ceilings, throughput, latency, projections, resources",
		Long: `Runs memmie as dev does (an embedded NATS server with its file store, a PostgreSQL cluster
of its own, the engine and the projections) against an HTTP service in the process that
answers every call at once, and measures, in one run:

  - the ceilings: JetStream async publish, sync publish and publish with an expected last
    subject sequence (msgs/s), Postgres batched upserts and COPY (rows/s);
  - a workflow of --steps api_call steps at saturation, --executions queued at once for
    --duration: executions/s, steps/s, stored msgs/s and their ratio to the async ceiling,
    overall and over the first and last 30 s;
  - latency, one at a time and at each of --loads per second: from Start to the completed
    event, and from a blob's created event published to its last delta (a transform-only
    workflow): p50, p95, p99 and max;
  - the projections' largest lag during the saturation run, and the rate of a rebuild of the
    executions projection against COPY;
  - peak RSS and heap, CPU seconds per 1,000 executions, bytes allocated and stored per
    execution.

A saturation run of two minutes or more is also reported minute by minute: executions/s,
CPU seconds per 1,000 executions, the largest heap and RSS, and the last minute over the
first, so that a long run (--duration 10m) says whether throughput and memory hold. The
JSON has the heap and RSS every 10 s as well. --profile-dir keeps a CPU profile of every
--profile-every of it and a heap profile at the end of each, to compare its start with its
end (go tool pprof -diff_base).

Progress goes to stderr, the table (or the JSON of --json) to stdout. The defaults take 3
to 5 minutes: longer on a busy machine, where the drain of the queue and the latency runs
at loads beyond what it sustains last longer. The saturation run stops starting executions
once its queue lasts to its end at the recent rate (and 10 s more).

The stores live in --data-dir, by default a temporary folder removed at the end (a folder
given must be new, empty or a bench's); with --database-url it uses that database, which
must hold no projections yet (it is migrated and written to), and starts no PostgreSQL. Both
are read from the command line only: MEMMIE_DATA_DIR and MEMMIE_DATABASE_URL name the stores
of dev and serve, which the bench never writes to.

It asserts nothing: the figures are what this machine did, with whatever else ran on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if cfg.Loads, err = parseLoads(loads); err != nil {
				return err
			}
			cfg.Skip = skip
			if cpuProfile != "" && cfg.ProfileDir != "" {
				return errors.New("--cpu-profile and --profile-dir exclude each other (one CPU profile at a time)")
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			// MEMMIE_DATA_DIR and MEMMIE_DATABASE_URL name dev's and serve's stores, which the
			// bench must never write to: only the command line names the bench's.
			for _, name := range []string{"data-dir", "database-url"} {
				if f := cmd.Flags().Lookup(name); f.Changed && !fromCommandLine(f) {
					_ = f.Value.Set("")
				}
			}

			if dataDir != "" {
				if err := prepareBenchDir(dataDir); err != nil {
					return err
				}
			} else {
				if dataDir, err = os.MkdirTemp("", "memmie-bench-"); err != nil {
					return fmt.Errorf("data dir: %w", err)
				}
				defer func() { _ = os.RemoveAll(dataDir) }()
				// As root, PostgreSQL runs as the postgres user, which must enter the folder.
				if err := os.Chmod(dataDir, 0o755); err != nil {
					return fmt.Errorf("data dir: %w", err)
				}
			}
			ownDatabase := databaseURL == ""
			if ownDatabase {
				pg, err := startPostgres(ctx, dataDir, log)
				if err != nil {
					return err
				}
				defer pg.stop(log)
				databaseURL = pg.URL()
			}
			if _, err := migrateDatabase(ctx, cmd.ErrOrStderr(), databaseURL, "the database"); err != nil {
				return err
			}
			pcfg, err := pgxpool.ParseConfig(databaseURL)
			if err != nil {
				return fmt.Errorf("database url: %w", err)
			}
			// As runRuntime sizes it: a connection per projection, the rest shared.
			cfg.Projections = runProjections(log.With("component", "projections"))
			pcfg.MaxConns = max(pcfg.MaxConns, int32(len(cfg.Projections)+4))
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				return fmt.Errorf("connect to the database: %w", err)
			}
			defer pool.Close()
			cfg.Pool = pool
			if !ownDatabase {
				// The bench rebuilds the projections from its own streams: never over rows of
				// another memmie.
				var used bool
				if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM projection_checkpoints)`).Scan(&used); err != nil {
					return fmt.Errorf("--database-url: %w", err)
				}
				if used {
					return errors.New("--database-url: the database holds memmie's projections already (projection_checkpoints has rows); the bench writes them from streams of its own: give an empty database")
				}
			}

			// The server as dev starts it (with --sync-always, as nats.conf's sync_interval:
			// always does), on a free port of loopback.
			srv, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(dataDir, "nats"), Host: "127.0.0.1", Port: -1,
				SyncAlways: cfg.SyncAlways, Logger: log.With("component", "nats-server")})
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			var o runtimeOptions
			cfg.URL, cfg.NATSOptions = srv.ClientURL(), o.natsOptions("memmie bench")
			cfg.Progress, cfg.Logger = cmd.ErrOrStderr(), log
			for _, p := range []struct {
				file string
				into *io.Writer
			}{{cpuProfile, &cfg.CPUProfile}, {allocs, &cfg.AllocProfile}} {
				if p.file == "" {
					continue
				}
				f, err := os.Create(p.file)
				if err != nil {
					return fmt.Errorf("profile: %w", err)
				}
				defer f.Close()
				*p.into = f
			}

			rep, err := bench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			js, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return fmt.Errorf("encode the report: %w", err)
			}
			if out != "" {
				if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
					return fmt.Errorf("--out: %w", err)
				}
			}
			if asJSON {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", js)
				return err
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the report as JSON instead of a table")
	f.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "how long the saturation run is sustained (then drained)")
	f.IntVar(&cfg.Executions, "executions", bench.DefaultExecutions, "executions queued or running at once during the saturation run")
	f.IntVar(&cfg.Steps, "steps", bench.DefaultSteps, fmt.Sprintf("api_call steps of the workflow (1 to %d)", bench.MaxSteps))
	f.StringVar(&loads, "loads", "100,500", "offered loads of the latency runs, per second, comma-separated (none: \"\")")
	f.DurationVar(&cfg.LatencyDuration, "latency-duration", bench.DefaultLatencyDuration, "length of each latency run")
	f.IntVar(&cfg.Serial, "serial", bench.DefaultSerial, "samples of the latency runs one at a time (within --latency-duration)")
	f.DurationVar(&cfg.Ceiling, "ceiling-duration", bench.DefaultCeiling, "length of each ceiling's measurement")
	f.IntVar(&cfg.MaxRunning, "max-running", dispatcher.DefaultMaxRunning, "maximum number of executions running at once, as memmie's")
	f.BoolVar(&cfg.SyncAlways, "sync-always", false, "the server flushes every write to disk before it acknowledges it (nats-server's sync_interval: always)")
	f.StringSliceVar(&skip, "skip", nil, "parts not to run: "+strings.Join(bench.Parts, ", "))
	f.StringVar(&dataDir, "data-dir", "", "folder of the NATS store and the PostgreSQL cluster, new, empty or a bench's, kept at the end (default: a temporary folder, removed at the end); never read from MEMMIE_DATA_DIR, which is dev's")
	f.StringVar(&databaseURL, "database-url", "", "an empty Postgres database to use instead of a cluster of the bench's own (it is migrated and written to); never read from MEMMIE_DATABASE_URL, which is serve's")
	f.StringVar(&out, "out", "", "also write the report as JSON to this file")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write the CPU profile of the saturation run (and its drain) to this file (go tool pprof)")
	f.StringVar(&allocs, "alloc-profile", "", "write the allocations profile at the end of the saturation run to this file (go tool pprof; it counts from the start of the process, the ceilings included)")
	f.StringVar(&cfg.ProfileDir, "profile-dir", "", "write a CPU profile of every --profile-every of the saturation run and its drain, and a heap profile at the end of each, into this folder (go tool pprof; not with --cpu-profile)")
	f.DurationVar(&cfg.ProfileEvery, "profile-every", bench.DefaultProfileEvery, "the span of each --profile-dir profile")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

// parseLoads reads --loads: positive rates per second, comma-separated.
func parseLoads(s string) ([]int, error) {
	loads := []int{}
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--loads %q: want positive numbers per second, comma-separated", s)
		}
		loads = append(loads, n)
	}
	return loads, nil
}

// benchMarker marks a data dir as a bench's, which a later bench may use again; a folder that
// holds anything else (a dev's store) is refused.
const benchMarker = ".memmie-bench"

// prepareBenchDir checks that --data-dir is new, empty or a bench's, creates it and marks it.
func prepareBenchDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
	case err != nil:
		return fmt.Errorf("--data-dir: %w", err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, benchMarker)); err != nil {
			return fmt.Errorf("--data-dir %s holds something other than a bench's stores (no %s): give a new or empty folder", dir, benchMarker)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, benchMarker), []byte("stores of memmie bench\n"), 0o644); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	return nil
}
