package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/memmie/memmie/internal/childproc"
)

// Config says where the cluster lives and how it listens.
type Config struct {
	// DataDir is the cluster's data folder (PGDATA). A missing or empty folder gets a new
	// cluster; a folder holding one is started again. Required.
	DataDir string
	// SocketDir is the folder of the server's Unix socket. Its path must stay short: the
	// socket's path, SocketDir + "/.s.PGSQL.5432", must fit in 107 bytes. Defaults to DataDir.
	SocketDir string
	// Port is 0 for the Unix socket only, -1 to listen also on a free loopback port chosen at
	// start, or a loopback port to listen on. Defaults to 0. With 0 the socket is named after
	// port 5432 (.s.PGSQL.5432), which collides with nothing since the folder is the cluster's.
	Port int
	// BinDirs are the folders searched, in order, for initdb and postgres. Defaults to
	// DefaultBinDirs().
	BinDirs []string
	// NoSync skips every fsync (initdb --no-sync, fsync=off): much faster, and a crash of the
	// machine (not of the server) can corrupt the cluster. For throwaway clusters in tests.
	// Defaults to false.
	NoSync bool
	// StartTimeout bounds Start's wait for the server to accept connections, which includes
	// crash recovery after a kill. Defaults to 60 seconds.
	StartTimeout time.Duration
	// Logger receives the server's log lines at Debug. Defaults to nil: they are dropped (the
	// last ones still appear in Start's error when the server does not come up).
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultStartTimeout = 60 * time.Second
	// socketPort names the Unix socket when the server listens on no TCP port.
	socketPort = 5432
	// maxSocketPath is the longest Unix socket path PostgreSQL accepts (sun_path less its NUL).
	maxSocketPath = 107
	// superuser is the cluster's superuser, whoever runs initdb.
	superuser = "postgres"
)

// Server is a running cluster.
type Server struct {
	cfg    Config
	port   int // the socket's or the TCP port
	cmd    *exec.Cmd
	done   chan struct{} // closed when the postgres process has exited
	exit   error         // the process's exit status, set before done closes
	output *tail
	stop   sync.Once
}

// Start starts the cluster in cfg.DataDir, creating it first when the folder has none, and
// returns once the server accepts connections. The server runs until Stop, or until this
// process exits (on Linux).
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("pglocal: Config.DataDir is required")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: data dir %s: %w", cfg.DataDir, err)
	}
	cfg.DataDir = dataDir
	if cfg.SocketDir == "" {
		cfg.SocketDir = cfg.DataDir
	}
	if cfg.SocketDir, err = filepath.Abs(cfg.SocketDir); err != nil {
		return nil, fmt.Errorf("pglocal: socket dir: %w", err)
	}
	if cfg.Port < -1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("pglocal: Config.Port %d: want 0 (Unix socket only), -1 (a free loopback port) or a port", cfg.Port)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.BinDirs == nil {
		cfg.BinDirs = DefaultBinDirs()
	}
	socket := filepath.Join(cfg.SocketDir, ".s.PGSQL."+strconv.Itoa(max(cfg.Port, socketPort)))
	if cfg.Port == -1 {
		socket = filepath.Join(cfg.SocketDir, ".s.PGSQL.65535") // the longest it can be
	}
	if len(socket) > maxSocketPath {
		return nil, fmt.Errorf("pglocal: Config.SocketDir %s is too long for a Unix socket (%s is over %d bytes): choose a shorter folder",
			cfg.SocketDir, socket, maxSocketPath)
	}

	bins, err := findBinaries(cfg.BinDirs)
	if err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	owner, err := runAs()
	if err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	if err := prepareDir(cfg.DataDir, owner); err != nil {
		return nil, fmt.Errorf("pglocal: data dir: %w", err)
	}
	if err := initdb(ctx, cfg, bins, owner); err != nil {
		return nil, fmt.Errorf("pglocal: initdb %s: %w", cfg.DataDir, err)
	}
	if cfg.SocketDir != cfg.DataDir {
		if err := prepareDir(cfg.SocketDir, owner); err != nil {
			return nil, fmt.Errorf("pglocal: socket dir: %w", err)
		}
	}

	deadline := time.Now().Add(cfg.StartTimeout)
	for {
		s, err := start(ctx, cfg, bins, owner, deadline)
		if err == nil {
			return s, nil
		}
		// After a kill, the old server's backends may still hold its shared memory for a
		// moment; postgres refuses to start until they are gone.
		if !errors.Is(err, errShmemInUse) || time.Now().After(deadline) {
			return nil, fmt.Errorf("pglocal: start postgres in %s: %w", cfg.DataDir, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pglocal: start postgres in %s: %w", cfg.DataDir, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errShmemInUse = errors.New("the killed server's processes still hold its shared memory")

// start runs postgres once and waits until it accepts connections or exits.
func start(ctx context.Context, cfg Config, bins binaries, owner *syscall.Credential, deadline time.Time) (*Server, error) {
	port := cfg.Port
	listen := ""
	switch {
	case port == -1:
		free, err := freePort()
		if err != nil {
			return nil, err
		}
		port, listen = free, "127.0.0.1"
	case port > 0:
		listen = "127.0.0.1"
	default:
		port = socketPort
	}
	if err := removeStaleLocks(cfg.DataDir, cfg.SocketDir, port); err != nil {
		return nil, err
	}

	s := &Server{cfg: cfg, port: port, done: make(chan struct{}), output: newTail(cfg.Logger)}
	args := []string{"-D", cfg.DataDir, "-k", cfg.SocketDir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=" + listen}
	if cfg.NoSync {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	// Not the caller's ctx: the server outlives Start, and Stop shuts it down gently.
	s.cmd = childproc.Command(context.Background(), bins.postgres, args...)
	s.cmd.Dir = cfg.DataDir // the caller's working folder may be out of the postgres user's reach
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	setOwner(s.cmd, owner)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bins.postgres, err)
	}
	go func() {
		s.exit = s.cmd.Wait()
		close(s.done)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.ping(ctx); err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			out := s.output.String()
			if strings.Contains(out, "pre-existing shared memory block") {
				return nil, fmt.Errorf("%w: %s", errShmemInUse, out)
			}
			return nil, fmt.Errorf("postgres exited (%v): %s", s.exit, out)
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-tick.C:
			if time.Now().After(deadline) {
				s.kill()
				return nil, fmt.Errorf("not accepting connections after %s: %s", cfg.StartTimeout, s.output.String())
			}
		}
	}
}

// ping connects once.
func (s *Server) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// URL is a pgx connection URL for the superuser on the postgres database: over the Unix
// socket (postgres://postgres@/postgres?host=<socket dir>&port=5432), or over loopback TCP
// when Config.Port is not 0.
func (s *Server) URL() string {
	if s.cfg.Port != 0 {
		return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", superuser, s.port)
	}
	q := url.Values{"host": {s.cfg.SocketDir}, "port": {strconv.Itoa(s.port)}}
	return fmt.Sprintf("postgres://%s@/postgres?%s", superuser, q.Encode())
}

// DataDir is the cluster's data folder, as an absolute path.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Done is closed when the server process has exited, stopped or not.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop shuts the server down (fast shutdown: sessions are disconnected, the data is
// checkpointed) and waits for it to exit. When ctx ends first, the server is shut down
// immediately (it recovers at the next start) and then killed.
func (s *Server) Stop(ctx context.Context) error {
	s.stop.Do(func() { _ = s.cmd.Process.Signal(syscall.SIGINT) })
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.kill()
	}
	return fmt.Errorf("pglocal: stop postgres in %s: %w", s.cfg.DataDir, ctx.Err())
}

// kill kills the server and waits for it to exit.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// initdb creates the cluster when the data folder has none.
func initdb(ctx context.Context, cfg Config, bins binaries, owner *syscall.Credential) error {
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "PG_VERSION")); err == nil {
		return nil
	}
	entries, err := os.ReadDir(cfg.DataDir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("the folder is not empty and holds no cluster (no PG_VERSION): choose an empty folder")
	}
	args := []string{"-D", cfg.DataDir, "-U", superuser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if cfg.NoSync {
		args = append(args, "--no-sync")
	}
	cmd := childproc.Command(ctx, bins.initdb, args...)
	cmd.Dir = cfg.DataDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setOwner(cmd, owner)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// freePort asks the kernel for a free loopback port. Another process may take it before
// postgres binds it; then postgres exits and Start reports it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail keeps the last lines the server wrote, for errors, and passes each to a logger.
type tail struct {
	logger *slog.Logger
	mu     sync.Mutex
	lines  []string
	part   []byte
}

const tailLines = 20

func newTail(logger *slog.Logger) *tail { return &tail{logger: logger} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		line := string(t.part[:i])
		t.part = t.part[i+1:]
		if t.logger != nil {
			t.logger.Debug(line, "component", "postgres")
		}
		t.lines = append(t.lines, line)
		if len(t.lines) > tailLines {
			t.lines = t.lines[1:]
		}
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(t.lines, string(t.part)), "\n")
}
