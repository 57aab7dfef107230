package natsserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/logbuf"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestStartServesJetStream(t *testing.T) {
	dir := t.TempDir()
	srv, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: dir})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)

	assert.NotZero(t, srv.Port())
	assert.Equal(t, "nats://127.0.0.1:"+strconv.Itoa(srv.Port()), srv.ClientURL())
	assert.Equal(t, dir, srv.StoreDir())

	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	ack, err := js.Publish(ctx, "t.a", []byte("x"))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), ack.Sequence)

	// The file store lives under the store directory.
	_, err = os.Stat(filepath.Join(dir, "jetstream"))
	require.NoError(t, err)
}

func TestStartConfigFile(t *testing.T) {
	fileStore := t.TempDir()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, `
server_name: from_file
port: -1
jetstream {
  store_dir: %q
  sync_interval: "5s"
}
`, fileStore), 0o600))

	tests := []struct {
		name          string
		cfg           natsserver.Config
		wantStoreDir  string
		wantName      string
		wantSyncEvery time.Duration
		wantSyncAll   bool
	}{
		{
			name:          "file alone",
			cfg:           natsserver.Config{ConfigFile: conf},
			wantStoreDir:  fileStore,
			wantName:      "from_file",
			wantSyncEvery: 5 * time.Second,
		},
		{
			name:          "fields override the file",
			cfg:           natsserver.Config{ConfigFile: conf, StoreDir: t.TempDir(), ServerName: "from_cfg", SyncInterval: time.Second, SyncAlways: true},
			wantName:      "from_cfg",
			wantSyncEvery: time.Second,
			wantSyncAll:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := natsserver.Start(tt.cfg)
			require.NoError(t, err)
			defer srv.Shutdown()
			want := tt.wantStoreDir
			if want == "" {
				want = tt.cfg.StoreDir
			}
			assert.Equal(t, want, srv.StoreDir())
			assert.Equal(t, tt.wantName, srv.NATS().Name())
			js := srv.NATS().JetStreamConfig()
			require.NotNil(t, js)
			assert.Equal(t, tt.wantSyncEvery, js.SyncInterval)
			assert.Equal(t, tt.wantSyncAll, js.SyncAlways)
			// Host defaults to loopback when the file does not say.
			assert.Equal(t, "nats://127.0.0.1:"+strconv.Itoa(srv.Port()), srv.ClientURL())
		})
	}
}

func TestStartErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.conf")
	require.NoError(t, os.WriteFile(bad, []byte("port: [\n"), 0o600))

	tests := []struct {
		name    string
		cfg     natsserver.Config
		wantErr string
	}{
		{"no store dir", natsserver.Config{Port: -1}, "StoreDir is required"},
		{"missing config file", natsserver.Config{ConfigFile: filepath.Join(t.TempDir(), "nope.conf"), StoreDir: t.TempDir()}, "nope.conf"},
		{"broken config file", natsserver.Config{ConfigFile: bad, StoreDir: t.TempDir()}, "bad.conf"},
		{"negative sync interval", natsserver.Config{Port: -1, StoreDir: t.TempDir(), SyncInterval: -time.Second}, "SyncInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := natsserver.Start(tt.cfg)
			if err == nil {
				srv.Shutdown()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestStartPortInUseFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	start := time.Now()
	srv, err := natsserver.Start(natsserver.Config{Port: port, StoreDir: t.TempDir()})
	if err == nil {
		srv.Shutdown()
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), strconv.Itoa(port))
	assert.Less(t, time.Since(start), 5*time.Second, "a port in use must not wait for the ready timeout")
}

func TestLoggerReceivesServerLines(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: t.TempDir(), Logger: logger})
	require.NoError(t, err)
	srv.Shutdown()

	out := buf.String()
	assert.Contains(t, out, "level=INFO")
	assert.Contains(t, out, "component=nats-server")
	assert.Contains(t, out, "Server is ready")
	assert.NotContains(t, out, "level=DEBUG", "debug lines only when the logger enables them")
}

func TestRestartKeepsData(t *testing.T) {
	srv, nc, js := natstest.Run(t)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "r.a", []byte("before"))
	require.NoError(t, err)
	port := srv.Port()

	srv = natstest.Restart(t, srv)
	assert.Equal(t, port, srv.Port())

	// The client reconnects on its own; poll until it has.
	require.Eventually(t, nc.IsConnected, 5*time.Second, 10*time.Millisecond)
	s, err := js.Stream(ctx, "R")
	require.NoError(t, err)
	msg, err := s.GetLastMsgForSubject(ctx, "r.a")
	require.NoError(t, err)
	assert.Equal(t, "before", string(msg.Data))
}

func ExampleStart() {
	dir, _ := os.MkdirTemp("", "memmie-nats")
	defer os.RemoveAll(dir)

	srv, err := natsserver.Start(natsserver.Config{Port: -1, StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	fmt.Println(nc.IsConnected())
	// Output: true
}
