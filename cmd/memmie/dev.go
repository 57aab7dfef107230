package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/memmie/memmie/internal/devlock"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/pglocal"
)

// Defaults of dev.
const (
	defaultDataDir    = "./.memmie"
	defaultNATSListen = "127.0.0.1:4222"
)

func newDevCmd() *cobra.Command {
	var (
		o          runtimeOptions
		dataDir    string
		natsListen string
		natsConfig string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process, for a laptop",
		Long: `Runs an embedded NATS server with JetStream (its file store under --data-dir/nats),
registers the definitions in --definitions, and runs every handler and the HTTP API on
--http-addr. NATS clients connect on --nats-listen; --nats-config loads a nats-server
configuration file (such as the repository's nats.conf), whose settings the flags given
explicitly override. With --nats-config and no --nats-user, dev connects as the file's user
named "engine", when it has one.

Without --database-url it starts a PostgreSQL cluster of its own from the machine's binaries
(PostgreSQL 15+, found with pg_config --bindir or in the usual Debian and Homebrew folders),
its data under --data-dir/postgres and listening on a Unix socket there only (in a folder of
the system's temporary one named after the data dir when that path is too long for a
socket). As root it runs as the postgres OS user; when that user cannot reach the data dir (a
clone under /root), the cluster lives in /var/tmp/memmie-pg-<hash of the data dir>. With
--database-url it uses that database and starts none. Either way it applies the migrations
the database has not had yet before it serves, and runs the executions projection. It prints the NATS URL, the Postgres URL, the
HTTP URL and what it registered.

An invalid definitions set stops the start, with every problem printed. Ctrl-C stops it
cleanly, and a restart on the same --data-dir resumes where it stopped: the streams are the
state, and executions, queued runs and pending timers carry on.

It survives kill -9 as well. One dev at a time owns a --data-dir: it holds an flock on
<data-dir>/memmie.lock, which holds its pid, and a second dev on the same directory fails at
once, naming that pid. The kernel releases the lock of a killed process, so the next start
takes it (and says that it recovers from an unclean stop); the server rebuilds its indexes
from the message files, and work that was in flight is delivered again. NATS runs inside the
dev process; its one child, PostgreSQL, is killed by the kernel when dev dies (on Linux), and
the next start recovers it from its write-ahead log. What the
server acknowledged survives kill -9; a crash of the machine can lose what it acknowledged
in the last 2 minutes, unless --nats-config sets sync_interval: always (see the README's
section on guarantees).

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
			set, err := loadDefinitions(cmd.OutOrStdout(), o.definitions, cmd.Flags().Changed("definitions"))
			if err != nil {
				return err
			}
			svcs, err := loadServices(o.services)
			if err != nil {
				return err
			}

			if dataDir == "" {
				return errors.New("--data-dir is required: the store and the lock of dev live there")
			}
			lock, err := devlock.Acquire(dataDir)
			var held *devlock.HeldError
			switch {
			case errors.As(err, &held):
				by := "another process"
				if held.PID != 0 {
					by = fmt.Sprintf("another memmie dev (pid %d)", held.PID)
				}
				return fmt.Errorf("data dir %s is in use by %s: stop it, or give another --data-dir", dataDir, by)
			case err != nil:
				return err
			}
			defer func() { _ = lock.Release() }()
			if lock.Previous != 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "data dir %s: recovering from an unclean stop (pid %d)\n", dataDir, lock.Previous)
			}

			if o.databaseURL == "" {
				pg, err := startPostgres(cmd.Context(), dataDir, log)
				if err != nil {
					return err
				}
				// Deferred before the engine and the API are: it stops after them.
				defer pg.stop(log)
				o.databaseURL = pg.URL()
			}

			if natsConfig != "" && o.natsUser == "" && o.natsPassword == "" {
				if o.natsUser, o.natsPassword, err = configEngineUser(natsConfig); err != nil {
					return err
				}
				if o.natsUser != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "NATS user: %s (from %s)\n", o.natsUser, natsConfig)
				}
			}
			cfg := natsserver.Config{ConfigFile: natsConfig, Logger: log.With("component", "nats-server"),
				StoreDir: filepath.Join(dataDir, "nats")}
			if natsConfig == "" || cmd.Flags().Changed("nats-listen") {
				host, port, err := splitHostPort(natsListen)
				if err != nil {
					return fmt.Errorf("--nats-listen: %w", err)
				}
				cfg.Host, cfg.Port = host, port
			}
			srv, err := natsserver.Start(cfg)
			if err != nil {
				return err
			}
			defer srv.Shutdown()

			// Over loopback, as any client: the configuration's users apply (--nats-user, or
			// the file's engine user).
			opts := o.natsOptions("memmie dev")
			nc, err := nats.Connect(srv.ClientURL(), opts...)
			if err != nil {
				if errors.Is(err, nats.ErrAuthorization) {
					err = fmt.Errorf("%w (with --nats-config, give the engine user with --nats-user and --nats-password-file, or name it %q in the file)", err, engineUser)
				}
				return fmt.Errorf("connect to the embedded server: %w", err)
			}
			defer nc.Close()
			return runRuntime(cmd.Context(), cmd.OutOrStdout(), log, nc, set, svcs, o, srv.ClientURL())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", defaultDataDir, "directory of the embedded server's store and of the lock file memmie.lock")
	f.StringVar(&natsListen, "nats-listen", defaultNATSListen, "address NATS clients connect to")
	f.StringVar(&natsConfig, "nats-config", "", "nats-server configuration file")
	f.StringVar(&o.databaseURL, "database-url", "",
		"Postgres database to use, migrated at start (default: a PostgreSQL cluster of dev's own under --data-dir/postgres)")
	// Warnings only: dev prints what it started, and a laptop's terminal is for the user.
	o.addFlags(f, defaultDefinitions, "warn")
	return cmd
}

// maxSocketPath is the longest Unix socket path PostgreSQL accepts (sun_path less its NUL).
const maxSocketPath = 107

// startPostgres starts dev's own cluster in <data-dir>/postgres (creating it the first time),
// listening on a Unix socket in that folder, or, when the socket's path would be too long, in
// <temp>/memmie-pg-<hash of the folder>: one per data dir, so two devs never collide.
func startPostgres(ctx context.Context, dataDir string, log *slog.Logger) (*devPostgres, error) {
	pgDir, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dataDir, err)
	}
	srv, err := pglocal.Start(ctx, pglocal.Config{DataDir: pgDir, SocketDir: postgresSocketDir(pgDir),
		Logger: log.With("component", "postgres")})
	if errors.Is(err, pglocal.ErrUnreachable) {
		// Root in a folder the postgres user cannot enter (a clone under /root): the cluster
		// lives in a folder of its own that persists across reboots, one per data dir.
		alt := postgresFallbackDir(pgDir)
		log.Warn("the data dir is out of the postgres user's reach; PostgreSQL keeps its data elsewhere",
			"data_dir", pgDir, "postgres_dir", alt, "err", err)
		pgDir = alt
		srv, err = pglocal.Start(ctx, pglocal.Config{DataDir: alt, SocketDir: alt,
			Logger: log.With("component", "postgres")})
	}
	if err != nil {
		return nil, fmt.Errorf("start the local PostgreSQL of dev: %w", err)
	}
	pg := &devPostgres{Server: srv}
	// dev goes on without it (the projection retries and the lists fail until a restart), but
	// says so.
	go func() {
		<-srv.Done()
		if !pg.stopping.Load() {
			log.Error("the local PostgreSQL exited; restart dev to start it again", "data_dir", pgDir)
		}
	}()
	return pg, nil
}

// postgresSocketDir is the folder of the socket of the cluster in pgDir: pgDir itself, or
// <temp>/memmie-pg-<hash of pgDir> when the socket's path there would be too long.
func postgresSocketDir(pgDir string) string {
	if len(filepath.Join(pgDir, ".s.PGSQL.5432")) <= maxSocketPath {
		return pgDir
	}
	sum := sha256.Sum256([]byte(pgDir))
	return filepath.Join(os.TempDir(), "memmie-pg-"+hex.EncodeToString(sum[:8]))
}

// postgresFallbackDir is where dev's cluster lives when the data dir is out of the postgres
// user's reach: /var/tmp (kept across reboots, unlike /tmp), one folder per data dir.
func postgresFallbackDir(pgDir string) string {
	sum := sha256.Sum256([]byte(pgDir))
	return filepath.Join("/var/tmp", "memmie-pg-"+hex.EncodeToString(sum[:8]))
}

// devPostgres is dev's own cluster.
type devPostgres struct {
	*pglocal.Server
	stopping atomic.Bool
}

// stop shuts the cluster down (fast shutdown) and waits for it.
func (pg *devPostgres) stop(log *slog.Logger) {
	pg.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := pg.Stop(ctx); err != nil {
		log.Warn("stop postgres", "err", err)
	}
}

// engineUser is the user of a --nats-config file that dev connects as by default.
const engineUser = "engine"

// configEngineUser returns the user named engineUser in a nats-server configuration file,
// and its password; nothing when the file has no such user, or only its bcrypt hash.
func configEngineUser(file string) (user, password string, err error) {
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		return "", "", fmt.Errorf("load nats config %s: %w", file, err)
	}
	for _, u := range opts.Users {
		if u.Username == engineUser && !strings.HasPrefix(u.Password, "$2") {
			return u.Username, u.Password, nil
		}
	}
	return "", "", nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want a number from 0 to 65535", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}
