// Package natstest starts an embedded JetStream server for a test: a random port, a store in
// a fresh temporary folder, everything stopped and removed when the test ends.
//
//	srv, nc, js := natstest.Run(t)
//	...
//	srv = natstest.Restart(t, srv) // same store, same port: nc reconnects
package natstest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/natsserver"
)

// Run starts a server and connects a client to it (see Connect).
func Run(t testing.TB) (*natsserver.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv := start(t, natsserver.Config{Port: -1, StoreDir: storeDir(t)})
	nc, js := Connect(t, srv)
	return srv, nc, js
}

// Connect connects another client to srv, closed when the test ends: a second process, as the
// server sees it. The client reconnects forever, so that it survives Restart.
func Connect(t testing.TB, srv *natsserver.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		t.Fatalf("connect to %s: %v", srv.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	// Tests store long histories with async publishes: room for all of them, so that a loaded
	// machine never stalls the publisher (the default, 4,000 outstanding, did once in CI).
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Restart shuts srv down and starts a new server on the same store directory and port.
func Restart(t testing.TB, srv *natsserver.Server) *natsserver.Server {
	t.Helper()
	cfg := srv.Config()
	cfg.Port = srv.Port()
	srv.Shutdown()
	return start(t, cfg)
}

// storeDir is a fresh folder, removed once the server has shut down. Unlike t.TempDir, the
// removal is tried again for a few seconds: a server that has just shut down may still be
// removing the staging folder of an atomic batch (seen once in a CI run).
func storeDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "natstest-")
	if err != nil {
		t.Fatalf("store dir: %v", err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove the store dir %s: %v", dir, err)
				return
			}
			time.Sleep(50 * time.Millisecond) // a retry interval, not a wait for a result
		}
	})
	return dir
}

func start(t testing.TB, cfg natsserver.Config) *natsserver.Server {
	t.Helper()
	srv, err := natsserver.Start(cfg)
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Messages returns every message stored in stream, read one by one by sequence: a work-queue
// stream (the inbox) takes no consumer that does not ack, which a read by consumer would be.
func Messages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted: taken up, or purged
		}
		if err != nil {
			t.Fatalf("message %d of %s: %v", seq, stream, err)
		}
		out = append(out, m)
	}
	return out
}
