package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says how to run the embedded server. When ConfigFile is set it is loaded first, and
// every field set here overrides what the file says.
type Config struct {
	// StoreDir is the directory of JetStream's file store. Required, unless ConfigFile sets
	// jetstream.store_dir.
	StoreDir string
	// Host is the address clients connect to. Defaults to the file's host, else 127.0.0.1.
	Host string
	// Port is the client port; -1 picks a free one. Defaults to the file's port, else 4222.
	Port int
	// ConfigFile is a nats-server configuration file (the format of nats-server -c). Defaults
	// to none.
	ConfigFile string
	// ServerName names the server in JetStream's metadata. Defaults to the file's
	// server_name, else a name the server makes up.
	ServerName string
	// SyncInterval is how often the file store is flushed to disk. Data written since the last
	// flush survives a crash of the process (it is in the OS page cache) but not of the
	// machine. Defaults to the file's setting, else the server's default (2 minutes).
	SyncInterval time.Duration
	// SyncAlways flushes every write to disk before it is acknowledged. Slow; for machines
	// that may lose power. Defaults to false.
	SyncAlways bool
	// Logger receives the server's log lines: notices at Info, warnings at Warn, errors at
	// Error, debug lines when the logger enables Debug. Defaults to nil: the server is silent.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections, which includes
	// recovering the streams on disk. Defaults to 30 seconds.
	ReadyTimeout time.Duration
}

// Defaults of Config.
const (
	DefaultHost         = "127.0.0.1"
	DefaultPort         = 4222
	DefaultReadyTimeout = 30 * time.Second
)

// Server is a running embedded server.
type Server struct {
	cfg      Config
	storeDir string
	ns       *server.Server
}

// Start loads the configuration, starts the server with JetStream enabled, and waits until it
// accepts connections.
func Start(cfg Config) (*Server, error) {
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		fileOpts, err := server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("load nats config %s: %w", cfg.ConfigFile, err)
		}
		opts = fileOpts
	}
	switch {
	case cfg.Host != "":
		opts.Host = cfg.Host
	case opts.Host == "":
		opts.Host = DefaultHost
	}
	switch {
	case cfg.Port != 0:
		opts.Port = cfg.Port
	case opts.Port == 0:
		opts.Port = DefaultPort
	}
	if cfg.StoreDir != "" {
		opts.StoreDir = cfg.StoreDir
	}
	if opts.StoreDir == "" {
		return nil, errors.New("start nats server: StoreDir is required (or jetstream.store_dir in the config file)")
	}
	if cfg.ServerName != "" {
		opts.ServerName = cfg.ServerName
	}
	if cfg.SyncInterval < 0 {
		return nil, fmt.Errorf("start nats server: SyncInterval %s is negative", cfg.SyncInterval)
	}
	if cfg.SyncInterval > 0 {
		opts.SyncInterval = cfg.SyncInterval
	}
	if cfg.SyncAlways {
		opts.SyncAlways = true
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	opts.JetStream = true
	// The process that embeds the server owns the signals.
	opts.NoSigs = true
	opts.NoLog = true

	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	// The logger is installed even without cfg.Logger: it catches fatal errors (a port in use),
	// so that Start fails at once instead of waiting for readiness that will never come.
	logger := &slogLogger{l: cfg.Logger, fatal: make(chan string, 1)}
	debug := cfg.Logger != nil && cfg.Logger.Enabled(context.Background(), slog.LevelDebug)
	ns.SetLoggerV2(logger, debug, false, false)
	ns.Start()
	if err := waitReady(ns, logger.fatal, cfg.ReadyTimeout); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("start nats server on %s: %w",
			net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)), err)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("start nats server: JetStream did not start")
	}
	return &Server{cfg: cfg, storeDir: opts.StoreDir, ns: ns}, nil
}

// ClientURL is the URL clients connect to, such as nats://127.0.0.1:4222. A server listening
// on every interface is reached on loopback.
func (s *Server) ClientURL() string {
	addr, ok := s.ns.Addr().(*net.TCPAddr)
	if !ok {
		return s.ns.ClientURL()
	}
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// Port is the port the server listens on, useful after starting with Port -1.
func (s *Server) Port() int {
	if addr, ok := s.ns.Addr().(*net.TCPAddr); ok {
		return addr.Port
	}
	return 0
}

// StoreDir is the store directory in use, from Config or from the config file.
func (s *Server) StoreDir() string { return s.storeDir }

// Config returns the configuration the server was started with.
func (s *Server) Config() Config { return s.cfg }

// NATS returns the underlying server, for what this package does not wrap.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has stopped. It is safe to call twice.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func waitReady(ns *server.Server, fatal <-chan string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections within %s", timeout)
		}
	}
}

// slogLogger routes the server's log lines to slog, or nowhere when l is nil, and reports the
// first fatal error on fatal.
type slogLogger struct {
	l     *slog.Logger
	fatal chan string
}

func (s *slogLogger) log(level slog.Level, format string, v []any) {
	if s.l != nil {
		s.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
	}
}

func (s *slogLogger) Noticef(format string, v ...any) { s.log(slog.LevelInfo, format, v) }
func (s *slogLogger) Warnf(format string, v ...any)   { s.log(slog.LevelWarn, format, v) }
func (s *slogLogger) Errorf(format string, v ...any)  { s.log(slog.LevelError, format, v) }
func (s *slogLogger) Debugf(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }
func (s *slogLogger) Tracef(format string, v ...any)  { s.log(slog.LevelDebug, format, v) }

func (s *slogLogger) Fatalf(format string, v ...any) {
	s.log(slog.LevelError, format, v)
	select {
	case s.fatal <- fmt.Sprintf(format, v...):
	default:
	}
}
