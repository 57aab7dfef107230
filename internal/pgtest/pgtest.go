// Package pgtest gives each test a PostgreSQL database of its own: a fresh clone of a
// template database on which memmie's migrations ran (pgtestdb's templates), on one cluster per
// test binary that it starts from the machine's binaries (internal/pglocal), or on the server
// that MEMMIE_TEST_DATABASE_URL names.
//
//	pool := pgtest.New(t) // migrated, dropped when the test passes
//
// A test never skips because PostgreSQL is missing: it fails, naming the fix. It must never be
// imported by code other than tests.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver pgtestdb connects with
	"github.com/peterldowns/pgtestdb"
	"github.com/peterldowns/pgtestdb/migrators/common"

	"github.com/memmie/memmie/internal/pglocal"
	"github.com/memmie/memmie/migrations"
)

// EnvURL names a server to use instead of a cluster of the test binary's own: a URL of a
// role that may create roles and databases, e.g.
// postgres://postgres:secret@localhost:5432/postgres?sslmode=disable.
const EnvURL = "MEMMIE_TEST_DATABASE_URL"

// New returns a pool on a fresh, migrated database of the test's own. The pool is closed at
// the end of the test, and the database dropped if the test passed (kept for a look if not).
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), URL(t))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// URL returns the URL of a fresh, migrated database of the test's own, for code that opens its
// own connections. Close them by the end of the test: a database with open sessions cannot be
// dropped.
func URL(t testing.TB) string {
	t.Helper()
	return database(t, migrator{})
}

// EmptyURL is URL on a fresh database without the migrations, for tests of migrating.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return database(t, pgtestdb.NoopMigrator{})
}

func database(t testing.TB, m pgtestdb.Migrator) string {
	t.Helper()
	conf, err := server()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return pgtestdb.Custom(t, conf, m).URL()
}

// migrator makes pgtestdb's template databases with memmie's migrations; a change to the
// files makes a new template.
type migrator struct{}

func (migrator) Hash() (string, error) { return common.HashDirs(migrations.FS, "*.sql", ".") }

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	_, err := migrations.Up(ctx, db)
	return err
}

var (
	once      sync.Once
	serverCfg pgtestdb.Config
	serverErr error
)

// server returns the server the databases are made on, starting the test binary's cluster the
// first time.
func server() (pgtestdb.Config, error) {
	once.Do(func() {
		rawURL := os.Getenv(EnvURL)
		if rawURL == "" {
			var srv *pglocal.Server
			if srv, serverErr = startCluster(); serverErr != nil {
				return
			}
			rawURL = srv.URL()
		}
		serverCfg, serverErr = config(rawURL)
	})
	return serverCfg, serverErr
}

// ownerFile, in a cluster's folder, holds the pid of the test binary it belongs to.
const ownerFile = "owner.pid"

// startCluster starts a throwaway cluster in a new folder under the system's temporary one. It
// dies with the test binary (on Linux); its folder is removed by the next test binary that
// starts one, since a test binary has no hook at its exit.
func startCluster() (*pglocal.Server, error) {
	removeAbandoned()
	dir, err := os.MkdirTemp("", "memmie-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("make a folder for a test cluster: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("make a folder for a test cluster: %w", err)
	}
	// The postgres OS user, as which the server runs when the test runs as root, must reach it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("make a folder for a test cluster: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pglocal.Start(ctx, pglocal.Config{DataDir: filepath.Join(dir, "data"), NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("start a PostgreSQL cluster for the tests (or set %s to a server of yours): %w", EnvURL, err)
	}
	return srv, nil
}

// removeAbandoned removes the cluster folders of test binaries that have exited.
func removeAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "memmie-pgtest-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being made, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// config turns a postgres:// URL into pgtestdb's form: a Unix socket stays in the options.
func config(rawURL string) (pgtestdb.Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return pgtestdb.Config{}, fmt.Errorf("%s: want a postgres:// URL, got %q", EnvURL, rawURL)
	}
	conf := pgtestdb.Config{
		DriverName: "pgx",
		User:       u.User.Username(),
		Database:   strings.TrimPrefix(u.Path, "/"),
		Options:    u.RawQuery,
		// A test that leaks a session still gets its database dropped.
		ForceTerminateConnections: true,
	}
	conf.Password, _ = u.User.Password()
	conf.Host, conf.Port = u.Hostname(), u.Port()
	if conf.Host != "" && conf.Port == "" {
		conf.Port = "5432"
	}
	if conf.Database == "" {
		conf.Database = "postgres"
	}
	if strings.Contains(conf.Host, ":") {
		conf.Host = "[" + conf.Host + "]" // IPv6, for pgtestdb's host:port
	}
	return conf, nil
}
