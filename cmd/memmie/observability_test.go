package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/natsserver/natstest"
)

// TestServeLogsJSON: with --log-format json every log line is one JSON object.
func TestServeLogsJSON(t *testing.T) {
	srv, _, _ := natstest.Run(t)
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--log-format", "json")
	serve.ready(t)
	require.NoError(t, serve.stop(t))
	var logs int
	for _, line := range strings.Split(serve.out.String(), "\n") {
		if strings.HasPrefix(line, "time=") {
			t.Errorf("a text log line: %s", line)
		}
		if !strings.HasPrefix(line, "{") {
			continue // the lines serve prints (HTTP:, ready)
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		assert.Contains(t, rec, "level")
		assert.Contains(t, rec, "msg")
		logs++
	}
	assert.Positive(t, logs, "JSON log lines in:\n%s", serve.out.String())
}

func TestServeRejectsAnUnknownLogFormat(t *testing.T) {
	code, out := execute(t, "serve", "--nats-url", "nats://127.0.0.1:1", "--log-format", "xml")
	assert.NotZero(t, code)
	assert.Contains(t, out, `--log-format "xml": want text or json`)
}

// TestServeSendsTraces: with --otel-endpoint, a traced blob event's spans reach the collector
// by the time serve has stopped (its shutdown sends the last batch).
func TestServeSendsTraces(t *testing.T) {
	var posts atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(collector.Close)
	srv, _, js := natstest.Run(t)
	serve := startBackground(t, "serve", "--nats-url", srv.ClientURL(), "--http-addr", "127.0.0.1:0",
		"--definitions", "../../definitions", "--otel-endpoint", collector.URL)
	serve.ready(t)

	const blobID = "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
	msg := nats.NewMsg("memmie.blobs." + blobID + ".created")
	msg.Data = []byte(`{"blob_id": "` + blobID + `", "user_id": "7c6b5a49-3828-4716-a5b4-c3d2e1f0a9b8", "content": "# Notes", "metadata": {"type": "note"}}`)
	msg.Header.Set(jetstream.MsgIDHeader, "traced-1")
	msg.Header["traceparent"] = []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	_, err := js.PublishMsg(t.Context(), msg)
	require.NoError(t, err)
	// The summary's deltas are written: the blob has versions 2 and 3.
	require.Eventually(t, func() bool { return len(streamDeltas(t, js, blobID)) >= 3 }, 30*time.Second, 50*time.Millisecond)

	require.NoError(t, serve.stop(t))
	assert.Positive(t, posts.Load(), "span batches posted to the collector:\n%s", serve.out.String())
}
