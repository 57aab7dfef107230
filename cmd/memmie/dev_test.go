package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/logbuf"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// background runs a long-running command (dev, serve) until the test stops it.
type background struct {
	out    *logbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

func startBackground(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &background{out: &logbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	root := newRootCmd()
	root.SetOut(bg.out)
	root.SetErr(bg.out)
	root.SetArgs(args)
	go func() { bg.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { _ = bg.stop(t) })
	return bg
}

var httpURLLine = regexp.MustCompile(`(?m)^HTTP: (\S+)$`)

// ready waits for the "ready" line and returns the HTTP URL printed before it.
func (bg *background) ready(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		out := bg.out.String()
		if strings.Contains(out, "ready; Ctrl-C stops") {
			m := httpURLLine.FindStringSubmatch(out)
			require.NotNil(t, m, out)
			return m[1]
		}
		select {
		case err := <-bg.done:
			bg.done <- err
			t.Fatalf("exited before it was ready: %v\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("not ready within 60s:\n%s", bg.out.String())
	return ""
}

// stop cancels the command's context, as Ctrl-C does, and returns its error.
func (bg *background) stop(t *testing.T) error {
	bg.cancel()
	select {
	case err := <-bg.done:
		bg.done <- err
		return err
	case <-time.After(time.Minute):
		t.Fatal("did not stop within a minute")
		return errors.New("timeout")
	}
}

// TestDevRunsTheTransformExample is the fresh-clone path: memmie dev with the example
// definitions, then memmie run of the transform-only example with --wait; then a restart on
// the same data directory finds everything where it was.
func TestDevRunsTheTransformExample(t *testing.T) {
	dataDir := devDataDir(t)
	args := []string{"dev", "--data-dir", dataDir, "--definitions", "../../definitions",
		"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}
	dev := startBackground(t, args...)
	apiURL := dev.ready(t)
	out := dev.out.String()
	assert.Regexp(t, `(?m)^NATS: nats://127\.0\.0\.1:\d+$`, out)
	assert.Contains(t, out, "workflow blob_summary revision 1 (new revision)")
	assert.Contains(t, out, "provider book-writer revision 1 (new revision)")

	code, stdout, stderr := executeSplit(t, "run", "blob_summary", "--api-url", apiURL, "--input", blobInput, "--wait")
	require.Equal(t, 0, code, stderr)
	state := decodeState(t, stdout)
	assert.Equal(t, "completed", state["status"])
	id := state["execution_id"].(string)
	ops := state["output"].(map[string]any)["delta_operations"].([]any)
	require.Len(t, ops, 2)
	assert.Equal(t, "chapter blob 0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d of user 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
		ops[0].(map[string]any)["value"])

	require.NoError(t, dev.stop(t))
	assert.Contains(t, dev.out.String(), "stopping")

	again := startBackground(t, args...)
	apiURL = again.ready(t)
	assert.Contains(t, again.out.String(), "workflow blob_summary revision 1 (unchanged)")
	code, stdout, stderr = executeSplit(t, "executions", "show", id, "--api-url", apiURL)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "completed", decodeState(t, stdout)["status"])
}

func TestDevStopsOnInvalidDefinitions(t *testing.T) {
	code, out := execute(t, "dev", "--data-dir", t.TempDir(), "--definitions", "../../definitions/testdata/invalid/set",
		"--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1")
	assert.Equal(t, 1, code)
	lines := regexp.MustCompile(`(?m)^\S+\.yaml:\d+: .+$`).FindAllString(out, -1)
	assert.GreaterOrEqual(t, len(lines), 2, "every problem is printed:\n%s", out)
	assert.NotContains(t, out, "HTTP:", "nothing started")
}

func TestServeAgainstANATSServer(t *testing.T) {
	srv, _, _ := natstest.Run(t)
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--definitions", "../../definitions",
		"--http-addr", "127.0.0.1:0", "--log-level", "warn")
	apiURL := serve.ready(t)
	assert.NotContains(t, serve.out.String(), "NATS:", "serve starts no server of its own")

	code, stdout, stderr := executeSplit(t, "run", "blob_summary", "--api-url", apiURL, "--input", blobInput, "--wait")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "completed", decodeState(t, stdout)["status"])
	require.NoError(t, serve.stop(t))
}

// TestDevWithTheRepositoryNATSConf starts dev with the repository's nats.conf: it connects as
// the file's engine user unless told otherwise, and runs the example.
func TestDevWithTheRepositoryNATSConf(t *testing.T) {
	_, password, err := configEngineUser("../../nats.conf")
	require.NoError(t, err)
	passwordFile := filepath.Join(t.TempDir(), "engine-password")
	require.NoError(t, os.WriteFile(passwordFile, []byte(password+"\n"), 0o600))
	tests := []struct {
		name  string
		flags []string
		user  string // given by the flags
		err   string // empty: it starts
	}{
		{name: "engine user by default"},
		{name: "the flags win", flags: []string{"--nats-user", "engine", "--nats-password", "wrong"},
			err: "Authorization Violation (with --nats-config, give the engine user with --nats-user and --nats-password-file"},
		{name: "a password file", flags: []string{"--nats-user", "engine", "--nats-password-file", passwordFile},
			user: "engine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"dev", "--nats-config", "../../nats.conf", "--data-dir", devDataDir(t),
				"--definitions", "../../definitions", "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:-1"}, tt.flags...)
			if tt.err != "" {
				code, out := execute(t, args...)
				assert.Equal(t, 1, code)
				assert.Contains(t, out, tt.err)
				assert.Contains(t, out, "--nats-password on the command line is visible", "a password on the command line is warned about")
				assert.NotContains(t, out, "HTTP:")
				return
			}
			dev := startBackground(t, args...)
			apiURL := dev.ready(t)
			if tt.user == "" {
				assert.Contains(t, dev.out.String(), "NATS user: engine (from ../../nats.conf)")
			}
			assert.NotContains(t, dev.out.String(), "visible to every user")
			code, stdout, stderr := executeSplit(t, "run", "blob_summary", "--api-url", apiURL, "--input", blobInput, "--wait")
			require.Equal(t, 0, code, stderr)
			assert.Equal(t, "completed", decodeState(t, stdout)["status"])
			require.NoError(t, dev.stop(t))
		})
	}
}
