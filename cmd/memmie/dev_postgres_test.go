package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/migrations"
)

// devDataDir is a data dir for dev that the postgres OS user can reach, as PostgreSQL runs as
// that user when the test runs as root (t.TempDir makes its parent folder 0700).
func devDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != filepath.Dir(p); p = filepath.Dir(p) {
		require.NoError(t, os.Chmod(p, 0o711))
	}
	return dir
}

var postgresURLLine = regexp.MustCompile(`(?m)^Postgres: (\S+)$`)

// printedDatabaseURL returns the URL of the "Postgres:" line.
func printedDatabaseURL(t *testing.T, out string) string {
	t.Helper()
	m := postgresURLLine.FindStringSubmatch(out)
	require.NotNil(t, m, "no Postgres: line in\n%s", out)
	return m[1]
}

// migratedVersion connects to url and returns the newest migration goose recorded there, and
// whether the projections' queued_executions table exists.
func migratedVersion(t *testing.T, url string) (version int64, table bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+migrations.VersionTable).Scan(&version))
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'queued_executions')").Scan(&table))
	return version, table
}

// advisoryLocks counts the advisory locks held on url's server: a projection's runner holds
// one while it writes (the migrations' lock is released once they are applied).
func advisoryLocks(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").Scan(&n))
	return n
}

// postmasterPID reads the server's pid from the cluster's postmaster.pid.
func postmasterPID(t *testing.T, pgDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgDir, "postmaster.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	require.NoError(t, err)
	return pid
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	s := string(b) // pid (comm) state ...: the state follows the last ')'
	i := strings.LastIndexByte(s, ')')
	return err != nil || i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestDevStartsItsOwnPostgres is the fresh-clone path: dev on a new data dir creates a cluster
// under <data-dir>/postgres, migrates it before it is ready and prints its URL; Ctrl-C stops
// the server cleanly, and the next dev starts on the same data without migrating again.
func TestDevStartsItsOwnPostgres(t *testing.T) {
	dataDir := devDataDir(t)
	pgDir := filepath.Join(dataDir, "postgres")
	args := []string{"dev", "--data-dir", dataDir, "--definitions", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}
	dev := startBackground(t, args...)
	dev.ready(t)
	out := dev.out.String()
	url := printedDatabaseURL(t, out)
	assert.Contains(t, url, "host="+strings.ReplaceAll(pgDir, "/", "%2F"), "the socket is in the data dir")
	assert.Regexp(t, `(?m)^applied 00001_projections\.sql \(\d+ms\)$`, out)
	assert.Regexp(t, `(?s)NATS: .*\nPostgres: .*\nHTTP: `, out, "the URLs are printed together")
	version, table := migratedVersion(t, url)
	assert.GreaterOrEqual(t, version, int64(1))
	assert.True(t, table, "queued_executions exists")
	pid := postmasterPID(t, pgDir)
	require.True(t, alive(pid))
	waitFor(t, "the executions projection's runner holding its lock", func() bool { return advisoryLocks(t, url) > 0 })

	require.NoError(t, dev.stop(t))
	assert.False(t, alive(pid), "postgres stopped with dev")
	assert.NoFileExists(t, filepath.Join(pgDir, "postmaster.pid"), "a clean shutdown removes its lock")

	again := startBackground(t, args...)
	again.ready(t)
	out = again.out.String()
	assert.NotContains(t, out, "applied ", "migrated once")
	assert.Equal(t, url, printedDatabaseURL(t, out))
	_, table = migratedVersion(t, url)
	assert.True(t, table)
	require.NoError(t, again.stop(t))
}

// TestDevKill9LeavesNoPostgres kills dev with SIGKILL: its postgres child must be gone within
// a deadline, and the next dev starts on the same cluster (the data written before is there,
// nothing is migrated again).
func TestDevKill9LeavesNoPostgres(t *testing.T) {
	dataDir := devDataDir(t)
	pgDir := filepath.Join(dataDir, "postgres")
	args := []string{"--data-dir", dataDir, "--definitions", t.TempDir(),
		"--http-addr", freeAddr(t), "--nats-listen", freeAddr(t)}
	first := startDevProcess(t, nil, args...)
	first.ready(t)
	url := printedDatabaseURL(t, first.stdout.String())
	pid := postmasterPID(t, pgDir)
	require.True(t, alive(pid))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE before_the_kill (n int); INSERT INTO before_the_kill VALUES (42)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	first.kill(t)
	waitWithin(t, 30*time.Second, "postgres exits with dev", func() (bool, string) {
		return !alive(pid), fmt.Sprintf("postgres pid %d still runs", pid)
	}, first)

	second := startDevProcess(t, nil, args...)
	second.ready(t)
	out := second.stdout.String()
	assert.NotContains(t, out, "applied ", "the same, migrated cluster")
	assert.NotEqual(t, pid, postmasterPID(t, pgDir))
	conn, err = pgx.Connect(ctx, printedDatabaseURL(t, out))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT n FROM before_the_kill").Scan(&n))
	assert.Equal(t, 42, n)
	_, table := migratedVersion(t, url)
	assert.True(t, table)
}

// TestDevWithADatabaseURL uses the database given and starts no cluster of its own.
func TestDevWithADatabaseURL(t *testing.T) {
	url := pgtest.EmptyURL(t)
	dataDir := devDataDir(t)
	dev := startBackground(t, "dev", "--data-dir", dataDir, "--database-url", url, "--definitions", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1")
	dev.ready(t)
	out := dev.out.String()
	assert.Regexp(t, `(?m)^applied 00001_projections\.sql \(\d+ms\)$`, out)
	assert.NotContains(t, printedDatabaseURL(t, out), "pgtdbpass", "the password is not printed")
	_, table := migratedVersion(t, url)
	assert.True(t, table)
	assert.NoDirExists(t, filepath.Join(dataDir, "postgres"), "no local cluster")
	require.NoError(t, dev.stop(t))
}

// TestServeMigratesTheDatabase starts two serve at once on one empty database (one through
// MEMMIE_DATABASE_URL): the migrations are applied once, before either is ready. A serve
// without a database runs and says so.
func TestServeMigratesTheDatabase(t *testing.T) {
	srv, _, _ := natstest.Run(t)
	url := pgtest.EmptyURL(t)
	serve := func(extra ...string) *background {
		return startBackground(t, append([]string{"serve", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0"}, extra...)...)
	}
	one := serve("--database-url", url)
	t.Setenv("MEMMIE_DATABASE_URL", url)
	two := serve()
	one.ready(t)
	two.ready(t)
	outs := one.out.String() + two.out.String()
	assert.Len(t, regexp.MustCompile(`(?m)^applied 00001_projections\.sql`).FindAllString(outs, -1), 1, outs)
	assert.Len(t, postgresURLLine.FindAllString(outs, -1), 2, outs)
	version, table := migratedVersion(t, url)
	assert.GreaterOrEqual(t, version, int64(1))
	assert.True(t, table)
	require.NoError(t, one.stop(t))
	require.NoError(t, two.stop(t))

	t.Setenv("MEMMIE_DATABASE_URL", "")
	require.NoError(t, os.Unsetenv("MEMMIE_DATABASE_URL"))
	none := serve("--log-level", "info")
	none.ready(t)
	assert.Contains(t, none.out.String(), "no database configured")
	assert.NotContains(t, none.out.String(), "Postgres:")
	require.NoError(t, none.stop(t))
}

// TestDevPostgresOnALongDataDir: a data dir whose socket path would pass the 107 bytes of a
// Unix socket gets its socket in a folder of the temporary one, named after the data dir.
func TestDevPostgresOnALongDataDir(t *testing.T) {
	dataDir := filepath.Join(devDataDir(t), strings.Repeat("a-long-folder-name-", 5))
	require.NoError(t, os.MkdirAll(dataDir, 0o755))
	pgDir, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
	require.NoError(t, err)
	socketDir := postgresSocketDir(pgDir)
	require.True(t, strings.HasPrefix(socketDir, filepath.Join(os.TempDir(), "memmie-pg-")), socketDir)
	t.Cleanup(func() { _ = os.RemoveAll(socketDir) })
	assert.Equal(t, socketDir, postgresSocketDir(pgDir), "the same folder at every start")
	assert.Equal(t, "/short/postgres", postgresSocketDir("/short/postgres"))

	dev := startBackground(t, "dev", "--data-dir", dataDir, "--definitions", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1")
	dev.ready(t)
	url := printedDatabaseURL(t, dev.out.String())
	assert.Contains(t, url, "host="+strings.ReplaceAll(socketDir, "/", "%2F"))
	_, table := migratedVersion(t, url)
	assert.True(t, table)
	require.NoError(t, dev.stop(t))
}

// As root in a data dir the postgres user cannot enter (a clone under /root, whose mode is
// 0700), dev keeps its cluster in a folder of its own and still starts: the README's first
// command works wherever the repository is cloned.
func TestDevPostgresOutOfReach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: PostgreSQL runs as this user, who reaches every folder it owns")
	}
	private := t.TempDir() // 0700, as t.TempDir makes it
	require.NoError(t, os.Chmod(private, 0o700))
	dataDir := filepath.Join(private, "data")
	pgDir, err := filepath.Abs(filepath.Join(dataDir, "postgres"))
	require.NoError(t, err)
	alt := postgresFallbackDir(pgDir)
	t.Cleanup(func() { _ = os.RemoveAll(alt) })

	start := func() *background {
		dev := startBackground(t, "dev", "--data-dir", dataDir, "--definitions", t.TempDir(),
			"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1")
		dev.ready(t)
		return dev
	}
	dev := start()
	url := printedDatabaseURL(t, dev.out.String())
	_, table := migratedVersion(t, url)
	assert.True(t, table)
	if os.Geteuid() == 0 {
		assert.Contains(t, url, "host="+strings.ReplaceAll(alt, "/", "%2F"), "the cluster lives in the fallback folder")
		assert.Contains(t, dev.out.String(), "out of the postgres user's reach")
	}
	require.NoError(t, dev.stop(t))

	again := start()
	assert.Equal(t, url, printedDatabaseURL(t, again.out.String()), "the same cluster at the next start")
	require.NoError(t, again.stop(t))
}
