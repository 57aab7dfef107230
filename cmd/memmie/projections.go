package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/memmie/memmie/projections"
)

// rebuildOptions are the flags of projections rebuild.
type rebuildOptions struct {
	databaseURL, natsURL, natsCreds, natsUser, natsPassword string
}

func newProjectionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Manage the Postgres projections",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var o rebuildOptions
	rebuild := &cobra.Command{
		Use:   "rebuild [NAME...]",
		Short: "Rebuild projections from the first message of their streams",
		Long: `Rebuilds the named projections (every one that serve runs, without names), one after the
other: each is replayed from the first message of its stream into fresh tables while the live
ones keep serving and a running serve keeps writing them, catches up the tail written
meanwhile, and is swapped in in one short transaction, which drops the old tables. A running
serve's projection goes on from the swap. It prints each phase and the projection's apply
rate (events/s) during the replay. A projection that is being rebuilt elsewhere is refused.
The database must be migrated (memmie migrate, or a start of serve).

Projections: ` + strings.Join(projectionNames(), ", "),
		RunE: func(cmd *cobra.Command, args []string) error {
			return rebuildProjections(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args)
		},
	}
	f := rebuild.Flags()
	f.StringVar(&o.databaseURL, "database-url", "", "Postgres database of the projections, e.g. postgres://user:pass@host:5432/memmie")
	f.StringVar(&o.natsURL, "nats-url", defaultNATSURL, "NATS server or cluster to connect to")
	f.StringVar(&o.natsCreds, "nats-creds", "", "NATS credentials file")
	f.StringVar(&o.natsUser, "nats-user", "", "NATS user (e.g. the engine user of nats.conf)")
	f.StringVar(&o.natsPassword, "nats-password", "", "password of --nats-user")
	cmd.AddCommand(rebuild)
	return cmd
}

// projectionNames are the names of the projections serve runs.
func projectionNames() []string {
	var names []string
	for _, p := range runProjections(nil) {
		names = append(names, p.Name())
	}
	return names
}

// pickProjections returns the projections serve runs that names name, in the order given, or
// all of them when there is no name.
func pickProjections(names []string, all []projections.Projection) ([]projections.Projection, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []projections.Projection
	for _, name := range names {
		i := slices.IndexFunc(all, func(p projections.Projection) bool { return p.Name() == name })
		if i < 0 {
			return nil, fmt.Errorf("no projection %q: want one of %s", name, strings.Join(projectionNames(), ", "))
		}
		if !slices.Contains(out, all[i]) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

func rebuildProjections(ctx context.Context, out, errOut io.Writer, o rebuildOptions, names []string) error {
	if o.databaseURL == "" {
		return errors.New("projections rebuild: --database-url (or " + envName("database-url") + ") is required")
	}
	log, err := newLogger(errOut, "warn")
	if err != nil {
		return err
	}
	ps, err := pickProjections(names, runProjections(log))
	if err != nil {
		return err
	}
	tuneGC()

	opts := []nats.Option{nats.Name("memmie projections rebuild")}
	if o.natsUser != "" || o.natsPassword != "" {
		opts = append(opts, nats.UserInfo(o.natsUser, o.natsPassword))
	}
	if o.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(o.natsCreds))
	}
	nc, err := nats.Connect(o.natsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", o.natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pool, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("connect to the database: %w", err)
	}
	defer pool.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		return fmt.Errorf("connect to the database: %w", err)
	}

	for _, p := range ps {
		fmt.Fprintf(out, "%s: rebuilding from %s\n", p.Name(), p.Stream())
		res, err := projections.Rebuild(ctx, p, projections.RebuildConfig{
			Pool: pool, JS: js, Log: log,
			Progress: func(pr projections.Progress) {
				switch pr.Phase {
				case projections.PhaseReplayed:
					fmt.Fprintf(out, "%s: replayed %d events, up to %d (%s)\n", pr.Projection, pr.Events, pr.Seq, round(pr.Elapsed))
				case projections.PhaseCaughtUp:
					fmt.Fprintf(out, "%s: caught up the tail, up to %d (%s)\n", pr.Projection, pr.Seq, round(pr.Elapsed))
				case projections.PhaseSwapped:
					fmt.Fprintf(out, "%s: swapped in at %d (%s)\n", pr.Projection, pr.Seq, round(pr.Elapsed))
				}
			},
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: rebuilt: %d events in %s (the replay applied %.0f events/s)\n", p.Name(), res.Events, round(res.Took), res.Rate())
	}
	return nil
}

// tuneGC makes the garbage collector run less often: a rebuild holds its rows in memory and
// decoding makes much garbage, so that with the default GOGC the collector takes a good part
// of its time (BenchmarkRebuild of the executions projection: about 95k events/s with
// GOGC=100, 155k with GOGC=400). The memory limit bounds the heap all the same, collecting
// more often near it. GOGC and GOMEMLIMIT, when set, win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(1 << 30)
	}
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
