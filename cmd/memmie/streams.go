package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/devlock"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
)

// streamsOptions are the flags of streams show and update.
type streamsOptions struct {
	natsURL, natsCreds, natsUser, natsPassword string
	// dataDir and natsConfig, when dataDir is set, open the store of a stopped memmie dev
	// instead of connecting to natsURL (see openDataDir).
	dataDir, natsConfig string
	// replicas and partitions, when 0, are what the server has (or the defaults for a stream
	// that does not exist), so that an update changes only what it is asked to.
	replicas, partitions int
	dryRun               bool
}

func newStreamsCmd() *cobra.Command {
	var o streamsOptions
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "Compare memmie's streams with their configuration, and update them",
		Long: `A start of memmie (dev, serve) creates the streams that do not exist and never rewrites
one that does: a stream whose partitions, replicas or storage differ from the process's
options, or that lacks something memmie relies on, stops the start; smaller differences
(a description, a limit, a flag memmie no longer needs) are logged and left. These
commands show and apply the differences:

  show     prints each stream's differences from the configuration memmie wants
  update   prints them and applies them (--dry-run: prints only)

--replicas and --partitions name the wanted values; without them the streams keep what
they have. Changing the partitions needs an empty inbox: a command stays under the
partition it was stored with, which no consumer reads once the number changes. Stop every
memmie process first, so that nothing is published while the streams change. A stream's
storage or retention cannot change in place.

--data-dir DIR works on the store of a memmie dev (DIR/nats) without a running server: it
takes DIR's lock as dev does (so it fails while a dev runs there), starts the embedded server
on DIR listening on a free loopback port only, and stops it when done. Give the dev's
--nats-config too if it was started with one (its streams are in that file's account; the
file's engine user connects).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.natsURL, "nats-url", defaultNATSURL, "NATS server or cluster to connect to")
	f.StringVar(&o.natsCreds, "nats-creds", "", "NATS credentials file")
	f.StringVar(&o.natsUser, "nats-user", "", "NATS user (e.g. the engine user of nats.conf)")
	f.StringVar(&o.natsPassword, "nats-password", "", "password of --nats-user")
	f.StringVar(&o.dataDir, "data-dir", "", "a stopped memmie dev's data dir: open its store instead of connecting to --nats-url")
	f.StringVar(&o.natsConfig, "nats-config", "", "with --data-dir: the nats-server configuration file the dev was started with")
	f.IntVar(&o.replicas, "replicas", 0, "wanted replicas of every stream (default: as each stream has them)")
	f.IntVar(&o.partitions, "partitions", 0, "wanted partitions of the inbox (default: as the inbox has them)")

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the differences of each stream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.dryRun = true
			return streamsUpdate(cmd.Context(), cmd.OutOrStdout(), o, cmd.Flags().Changed("nats-url"))
		},
	}
	update := &cobra.Command{
		Use:   "update",
		Short: "Apply the differences of each stream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return streamsUpdate(cmd.Context(), cmd.OutOrStdout(), o, cmd.Flags().Changed("nats-url"))
		},
	}
	update.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the differences, change nothing")
	cmd.AddCommand(show, update)
	return cmd
}

func streamsUpdate(ctx context.Context, out io.Writer, o streamsOptions, urlGiven bool) error {
	if o.replicas < 0 || o.partitions < 0 || o.partitions > streams.MaxPartitions {
		return fmt.Errorf("--replicas %d, --partitions %d: want replicas of 1 or more, partitions within 1 to %d",
			o.replicas, o.partitions, streams.MaxPartitions)
	}
	switch {
	case o.dataDir != "" && urlGiven:
		return errors.New("--data-dir and --nats-url: give one, the store of a stopped memmie dev or a running server")
	case o.dataDir == "" && o.natsConfig != "":
		return errors.New("--nats-config goes with --data-dir: it is the configuration of the dev whose store is opened")
	case o.dataDir != "":
		url, closeStore, err := openDataDir(o.dataDir, o.natsConfig)
		if err != nil {
			return err
		}
		defer closeStore()
		o.natsURL = url
		if o.natsConfig != "" && o.natsUser == "" && o.natsPassword == "" {
			if o.natsUser, o.natsPassword, err = configEngineUser(o.natsConfig); err != nil {
				return err
			}
		}
	}
	// The engine's inbox prefix: nats.conf lets its engine user subscribe to no other.
	opts := []nats.Option{nats.Name("memmie streams"), nats.CustomInboxPrefix(events.EngineInboxPrefix)}
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
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := stream.CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		return err
	}

	statuses, err := wantedStatuses(ctx, js, o)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range statuses {
		name := st.Wanted.Name
		switch {
		case st.Server == nil:
			fmt.Fprintf(out, "%s: missing\n", name)
		case len(st.Differences) == 0:
			fmt.Fprintf(out, "%s: as wanted\n", name)
			continue
		}
		for _, d := range st.Differences {
			fmt.Fprintf(out, "%s: %s: %s on the server, %s wanted\n", name, d.Field, d.Server, d.Wanted)
		}
		if o.dryRun {
			continue
		}
		if err := safeToUpdate(ctx, js, st); err != nil {
			fmt.Fprintf(out, "%s: not updated: %v\n", name, err)
			errs = append(errs, err)
			continue
		}
		if err := stream.Update(ctx, js, st); err != nil {
			fmt.Fprintf(out, "%s: not updated: %v\n", name, err)
			errs = append(errs, err)
			continue
		}
		if st.Server == nil {
			fmt.Fprintf(out, "%s: created\n", name)
		} else {
			fmt.Fprintf(out, "%s: updated\n", name)
		}
	}
	if len(errs) > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("memmie: %d of %d streams not updated", len(errs), len(statuses))}
	}
	return nil
}

// openDataDir starts the embedded server on the store of a stopped memmie dev, as dev would,
// and returns its URL and what stops it. It holds the data dir's lock meanwhile, so that no
// dev runs there, and the server listens on a free loopback port only: no memmie process is
// connected and nothing is published while the streams change, which is what an update asks
// of an operator.
func openDataDir(dataDir, natsConfig string) (url string, closeStore func(), err error) {
	store := filepath.Join(dataDir, "nats")
	if fi, err := os.Stat(store); err != nil || !fi.IsDir() {
		return "", nil, fmt.Errorf("data dir %s: no NATS store at %s (is it a memmie dev's data dir?)", dataDir, store)
	}
	lock, err := devlock.Acquire(dataDir)
	if held := (*devlock.HeldError)(nil); errors.As(err, &held) {
		by := "another process"
		if held.PID != 0 {
			by = fmt.Sprintf("a memmie dev (pid %d)", held.PID)
		}
		return "", nil, fmt.Errorf("data dir %s is in use by %s: stop it, then update", dataDir, by)
	}
	if err != nil {
		return "", nil, err
	}
	srv, err := natsserver.Start(natsserver.Config{ConfigFile: natsConfig, StoreDir: store, Host: "127.0.0.1", Port: -1})
	if err != nil {
		_ = lock.Release()
		return "", nil, err
	}
	return srv.ClientURL(), func() {
		srv.Shutdown()
		_ = lock.Release()
	}, nil
}

// wantedStatuses compares the streams with memmie's configuration, taking the replicas and
// partitions the flags leave out from the server.
func wantedStatuses(ctx context.Context, js jetstream.JetStream, o streamsOptions) ([]stream.Status, error) {
	current, err := stream.Compare(ctx, js, engine.StreamConfigs(streams.Options{}))
	if err != nil {
		return nil, err
	}
	partitions := o.partitions
	for _, st := range current {
		if st.Server != nil && st.Wanted.Name == streams.Inbox && partitions == 0 {
			partitions, _ = streams.PartitionsOf(*st.Server)
		}
	}
	cfgs := engine.StreamConfigs(streams.Options{Replicas: o.replicas, Partitions: partitions})
	for i, st := range current {
		if st.Server != nil && o.replicas == 0 {
			cfgs[i].Replicas = st.Server.Replicas
		}
	}
	return stream.Compare(ctx, js, cfgs)
}

// Refusals of a change of partitions.
var (
	errInboxNotEmpty   = errors.New("the inbox holds commands")
	errInboxInUse      = errors.New("memmie processes are running")
	errBlobsUnfinished = errors.New("blob events are not processed yet")
)

// safeToUpdate refuses to change the inbox's partitions while it holds commands: each is
// stored under the partition of the old number, which no consumer reads once the number
// changes. Schedules (memmie.timers.*.*) are no obstacle: they are mapped when they fire.
func safeToUpdate(ctx context.Context, js jetstream.JetStream, st stream.Status) error {
	if st.Server == nil || (st.Wanted.Name != streams.Inbox && st.Wanted.Name != streams.Blobs) {
		return nil
	}
	changes := false
	for _, d := range st.Differences {
		changes = changes || d.Field == "partitions"
	}
	if !changes {
		return nil
	}
	if st.Wanted.Name == streams.Blobs {
		return blobsProcessed(ctx, js)
	}
	s, err := js.Stream(ctx, streams.Inbox)
	if err != nil {
		return fmt.Errorf("count the inbox's commands: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(streams.SubjectInboxPartitions))
	if err != nil {
		return fmt.Errorf("count the inbox's commands: %w", err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	if n > 0 {
		return fmt.Errorf("%w (%d): changing the partitions would orphan them, as each stays under the partition it was stored with; "+
			"run memmie with its current --partitions until the inbox is empty, stop every process, then update", errInboxNotEmpty, n)
	}
	// A process still pulling would go on with the old number, and what it publishes while
	// the transform changes may land under the old partitions.
	consumers := s.ListConsumers(ctx)
	for c := range consumers.Info() {
		if c.NumWaiting > 0 {
			return fmt.Errorf("%w: consumer %s still pulls from the inbox: stop every memmie process, then update", errInboxInUse, c.Name)
		}
	}
	if err := consumers.Err(); err != nil {
		return fmt.Errorf("list the inbox's consumers: %w", err)
	}
	return nil
}

// blobsProcessed refuses to (re)partition MEMMIE_BLOBS while one of its consumers has events
// not yet processed, or is pulled: the stream keeps every event under the subject it was
// stored with, so an event left under the old partitioning (or none, for a stream of an older
// memmie, consumed by its one `blobs` durable) would be read by another consumer than the
// blob's next events, or by none, and a blob's events would no longer apply in order.
func blobsProcessed(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, streams.Blobs)
	if err != nil {
		return fmt.Errorf("check the blob events' consumers: %w", err)
	}
	consumers := s.ListConsumers(ctx)
	for c := range consumers.Info() {
		switch {
		case c.NumWaiting > 0:
			return fmt.Errorf("%w: consumer %s still pulls from %s: stop every memmie process, then update", errInboxInUse, c.Name, streams.Blobs)
		case c.NumPending > 0 || c.NumAckPending > 0:
			return fmt.Errorf("%w: consumer %s has %d not delivered and %d not acknowledged; "+
				"run memmie as it is until they are processed, stop every process, then update",
				errBlobsUnfinished, c.Name, c.NumPending, c.NumAckPending)
		}
	}
	if err := consumers.Err(); err != nil {
		return fmt.Errorf("list the blob events' consumers: %w", err)
	}
	return nil
}
