package pglocal_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pglocal"
)

// dataDir is a fresh folder for a cluster that the postgres OS user can reach when the test
// runs as root (t.TempDir makes its folders 0700).
func dataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != filepath.Dir(p); p = filepath.Dir(p) {
		require.NoError(t, os.Chmod(p, 0o711))
	}
	return filepath.Join(dir, "pg")
}

func start(t *testing.T, cfg pglocal.Config) *pglocal.Server {
	t.Helper()
	cfg.NoSync = true
	srv, err := pglocal.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return srv
}

func connect(t *testing.T, srv *pglocal.Server) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.URL())
	require.NoError(t, err, srv.URL())
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func count(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM kept").Scan(&n))
	return n
}

func TestStartStopStartAgainKeepsTheData(t *testing.T) {
	ctx := context.Background()
	dir := dataDir(t)
	srv := start(t, pglocal.Config{DataDir: dir})
	require.Contains(t, srv.URL(), "host="+strings.ReplaceAll(dir, "/", "%2F"))
	conn := connect(t, srv)
	_, err := conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, srv.Stop(ctx))
	select {
	case <-srv.Done():
	default:
		t.Fatal("Stop returned before the server exited")
	}
	require.NoError(t, srv.Stop(ctx), "a second Stop is a no-op")

	again := start(t, pglocal.Config{DataDir: dir})
	require.Equal(t, 2, count(t, connect(t, again)))
}

// TestKilledServerStartsAgain kills the server with SIGKILL while a session is open, as a
// kill -9 of memmie does (Pdeathsig), and hands its pid to a live process of another program, as
// a reboot or a busy machine does: the lock files then name a live process, which postgres
// alone takes for a running server.
func TestKilledServerStartsAgain(t *testing.T) {
	ctx := context.Background()
	dir := dataDir(t)
	srv := start(t, pglocal.Config{DataDir: dir})
	conn := connect(t, srv)
	_, err := conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
	require.NoError(t, err)

	pid, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	require.NoError(t, err)
	postmaster, err := strconv.Atoi(strings.SplitN(string(pid), "\n", 2)[0])
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(postmaster, syscall.SIGKILL))
	select {
	case <-srv.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the killed server did not exit")
	}

	// postgres takes a process it may not signal for another user's, hence not its owner: the
	// pid's new owner runs as the server's user.
	other := exec.Command("sleep", "300")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
	}
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	for _, lock := range []string{filepath.Join(dir, "postmaster.pid"), filepath.Join(dir, ".s.PGSQL.5432.lock")} {
		b, err := os.ReadFile(lock)
		require.NoError(t, err, "the killed server left %s", lock)
		lines := strings.SplitN(string(b), "\n", 2)
		require.NoError(t, os.WriteFile(lock, []byte(strconv.Itoa(other.Process.Pid)+"\n"+lines[1]), 0o600))
	}

	again := start(t, pglocal.Config{DataDir: dir})
	require.Equal(t, 1, count(t, connect(t, again)))
}

func TestLoopbackPort(t *testing.T) {
	srv := start(t, pglocal.Config{DataDir: dataDir(t), Port: -1})
	require.Contains(t, srv.URL(), "@127.0.0.1:")
	var one int
	require.NoError(t, connect(t, srv).QueryRow(context.Background(), "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)
}

func TestNoBinariesNamesBothFixes(t *testing.T) {
	empty := t.TempDir()
	_, err := pglocal.Start(context.Background(), pglocal.Config{DataDir: dataDir(t), BinDirs: []string{empty}})
	require.True(t, errors.Is(err, pglocal.ErrNoBinaries), "%v", err)
	require.ErrorContains(t, err, empty)
	require.ErrorContains(t, err, "install PostgreSQL 15+")
	require.ErrorContains(t, err, "--database-url")
	require.ErrorContains(t, err, "MEMMIE_TEST_DATABASE_URL")
}

func TestSocketPathTooLong(t *testing.T) {
	_, err := pglocal.Start(context.Background(), pglocal.Config{
		DataDir: dataDir(t), SocketDir: "/tmp/" + strings.Repeat("x", 100)})
	require.ErrorContains(t, err, "too long for a Unix socket")
}

func TestDefaultBinDirsFindThisMachinesPostgres(t *testing.T) {
	dirs := pglocal.DefaultBinDirs()
	require.NotEmpty(t, dirs, "install PostgreSQL 15+ (.ci/run does when it is missing)")
}
