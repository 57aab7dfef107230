package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/pgtest"
)

// The end-to-end tests of blobs: a real serve (or dev) on an embedded JetStream server, a real
// Postgres database and httptest services; blob events in as a client publishes them, deltas,
// executions and the API's blobs out.

// e2eWait bounds every wait of these tests: generous, since CI shares two cores.
const e2eWait = 90 * time.Second

// shippedDefinitions copies the repository's definitions (schemas, workflows, providers) into
// a folder of the test's, with the extra files (path under the folder to content).
func shippedDefinitions(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"schemas", "workflows", "providers"} {
		entries, err := os.ReadDir(filepath.Join("../../definitions", sub))
		require.NoError(t, err)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join("../../definitions", sub, e.Name()))
			require.NoError(t, err)
			writeFile(t, filepath.Join(dir, sub, e.Name()), string(b))
		}
	}
	for name, content := range extra {
		writeFile(t, filepath.Join(dir, name), content)
	}
	return dir
}

// servicesFile writes a --services file naming each service's base URL.
func servicesFile(t *testing.T, svcs map[string]string) string {
	t.Helper()
	var b strings.Builder
	for name, url := range svcs {
		fmt.Fprintf(&b, "%s:\n  base_url: %s\n", name, url)
	}
	path := filepath.Join(t.TempDir(), "services.yaml")
	writeFile(t, path, b.String())
	return path
}

// startBlobServe runs serve on natsURL with a database of its own and returns its API's URL.
func startBlobServe(t *testing.T, natsURL string, args ...string) (*background, string) {
	t.Helper()
	srv := startBackground(t, append([]string{"serve", "--nats-url", natsURL, "--http-addr", "127.0.0.1:0",
		"--database-url", pgtest.URL(t), "--log-level", "warn"}, args...)...)
	return srv, srv.ready(t)
}

// publishEvent publishes a client's blob event on memmie.blobs.<id>.<kind> with a Nats-Msg-Id.
func publishEvent(t *testing.T, js jetstream.JetStream, blobID, kind, body, msgID string) {
	t.Helper()
	msg := nats.NewMsg("memmie.blobs." + blobID + "." + kind)
	msg.Data = []byte(body)
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := js.PublishMsg(ctx, msg)
	require.NoError(t, err, "publish %s", msg.Subject)
}

// streamDeltas returns a blob's deltas as MEMMIE_DELTAS holds them, in stream order.
func streamDeltas(t *testing.T, js jetstream.JetStream, blobID string) []events.Delta {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := stream.Load(ctx, js, streams.Deltas, "memmie.deltas."+blobID)
	require.NoError(t, err)
	out := make([]events.Delta, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(t, err, "delta of %s: %s", blobID, m.Data)
		d, ok := ev.Data.(*events.Delta)
		require.True(t, ok, "a %s on %s", ev.Type, m.Subject)
		out = append(out, *d)
	}
	return out
}

// waitVersion waits until the blob has at least n deltas on the stream and returns them.
func waitVersion(t *testing.T, js jetstream.JetStream, blobID string, n int) []events.Delta {
	t.Helper()
	var d []events.Delta
	waitWithin(t, e2eWait, fmt.Sprintf("blob %s at version %d", blobID, n), func() (bool, string) {
		d = streamDeltas(t, js, blobID)
		return len(d) >= n, fmt.Sprintf("%d deltas: %s", len(d), deltaTypes(d))
	})
	return d
}

// deltaTypes is "v1 create, v2 add /metadata/x, ..." of deltas.
func deltaTypes(ds []events.Delta) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strings.TrimSpace(fmt.Sprintf("v%d %s %s", d.Version, d.Type, d.Path))
	}
	return strings.Join(parts, ", ")
}

// queuedExecutions returns every execution queued on MEMMIE_EXECUTIONS, by id.
func queuedExecutions(t *testing.T, js jetstream.JetStream) map[string]*events.ExecutionQueued {
	t.Helper()
	out := map[string]*events.ExecutionQueued{}
	for _, ev := range loadEvents(t, js, streams.Executions, "memmie.executions.*.queued") {
		q := ev.Data.(*events.ExecutionQueued)
		out[q.ExecutionID] = q
	}
	return out
}

// endedExecutions counts the terminal events of each execution.
func endedExecutions(t *testing.T, js jetstream.JetStream) map[string][]events.Type {
	t.Helper()
	out := map[string][]events.Type{}
	for _, filter := range []string{"memmie.executions.*.completed", "memmie.executions.*.failed", "memmie.executions.*.cancelled"} {
		for _, ev := range loadEvents(t, js, streams.Executions, filter) {
			id, _, err := events.ParseExecutionSubject(ev.Subject)
			require.NoError(t, err)
			out[id] = append(out[id], ev.Type)
		}
	}
	return out
}

func loadEvents(t *testing.T, js jetstream.JetStream, streamName, filter string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := stream.Load(ctx, js, streamName, filter)
	require.NoError(t, err)
	out := make([]events.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(t, err, "%s: %s", m.Subject, m.Data)
		out = append(out, ev)
	}
	return out
}

// streamLastSeqs are the last sequences of the streams blob work moves.
func streamLastSeqs(t *testing.T, js jetstream.JetStream) [4]uint64 {
	t.Helper()
	var out [4]uint64
	for i, name := range []string{streams.Blobs, streams.Triggers, streams.Executions, streams.Deltas} {
		s, err := js.Stream(context.Background(), name)
		require.NoError(t, err)
		info, err := s.Info(context.Background())
		require.NoError(t, err)
		out[i] = info.State.LastSeq
	}
	return out
}

// idle reports whether a durable consumer, or every partition consumer of its name
// (<durable>-<partition>), has nothing pending nor unacknowledged.
func idle(t *testing.T, js jetstream.JetStream, streamName, durable string) (bool, string) {
	t.Helper()
	s, err := js.Stream(context.Background(), streamName)
	if err != nil {
		return false, fmt.Sprintf("stream %s: %v", streamName, err)
	}
	consumers, found := s.ListConsumers(context.Background()), false
	for info := range consumers.Info() {
		if info.Name != durable && !strings.HasPrefix(info.Name, durable+"-") {
			continue
		}
		found = true
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return false, fmt.Sprintf("consumer %s: %d pending, %d unacknowledged", info.Name, info.NumPending, info.NumAckPending)
		}
	}
	if err := consumers.Err(); err != nil {
		return false, fmt.Sprintf("consumers of %s: %v", streamName, err)
	}
	return found, "consumer " + durable + " not found"
}

// waitSettled waits until blob work has stopped: both blob consumers idle, every queued
// execution ended, and no stream moved while that was checked.
func waitSettled(t *testing.T, js jetstream.JetStream, devs ...*devProcess) {
	t.Helper()
	waitWithin(t, e2eWait, "blob work settled", func() (bool, string) {
		before := streamLastSeqs(t, js)
		for _, c := range [][2]string{{streams.Blobs, "blobs"}, {streams.Triggers, "triggers"}, {streams.Executions, "blobs-outputs"}} {
			if ok, why := idle(t, js, c[0], c[1]); !ok {
				return false, why
			}
		}
		ended := endedExecutions(t, js)
		for id := range queuedExecutions(t, js) {
			if len(ended[id]) == 0 {
				return false, "execution " + id + " has not ended"
			}
		}
		if after := streamLastSeqs(t, js); after != before {
			return false, fmt.Sprintf("the streams moved: %v to %v", before, after)
		}
		return true, ""
	}, devs...)
}

// apiBlob GETs /v1/blobs/{id}, at version when it is above 0.
func apiBlob(t *testing.T, apiURL, id string, version int64) (int, string) {
	t.Helper()
	u := apiURL + "/v1/blobs/" + id
	if version > 0 {
		u += fmt.Sprintf("?version=%d", version)
	}
	return getBody(t, u)
}

// waitAPIBlob waits until the API serves the blob at version and returns its JSON.
func waitAPIBlob(t *testing.T, apiURL, id string, version int64) string {
	t.Helper()
	var body string
	waitWithin(t, e2eWait, fmt.Sprintf("GET /v1/blobs/%s at version %d", id, version), func() (bool, string) {
		var status int
		status, body = apiBlob(t, apiURL, id, 0)
		var s struct {
			Version int64 `json:"version"`
		}
		if status != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil {
			return false, fmt.Sprintf("%d %s", status, body)
		}
		return s.Version >= version, body
	})
	return body
}

// foldedJSON is the JSON of the blob the deltas fold to, as the API answers it.
func foldedJSON(t *testing.T, ds []events.Delta) string {
	t.Helper()
	s, err := blob.Fold(ds)
	require.NoError(t, err)
	return string(mustJSON(t, &s))
}

// request is what a recording service was sent.
type request struct {
	Method string
	Path   string
	Body   any
	// ExecutionID and StepID are X-Memmie-Execution-Id and X-Memmie-Step-Id.
	ExecutionID string `json:"-"`
	StepID      string `json:"-"`
}

// recorder is an httptest service that records its requests and answers each with answer.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newRecorder(t *testing.T, answer func(r request) (int, any)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := request{Method: r.Method, Path: r.URL.RequestURI(), ExecutionID: r.Header.Get("X-Memmie-Execution-Id"),
			StepID: r.Header.Get("X-Memmie-Step-Id")}
		b, _ := io.ReadAll(r.Body)
		if len(b) > 0 {
			if err := json.Unmarshal(b, &req.Body); err != nil {
				req.Body = "not JSON: " + string(b)
			}
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, req)
		rec.mu.Unlock()
		status, body := answer(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(rec.Close)
	return rec
}

// requests returns what the service was sent, in order.
func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// byExecution returns the requests of each execution, in order.
func (r *recorder) byExecution() map[string][]request {
	out := map[string][]request{}
	for _, req := range r.requests() {
		out[req.ExecutionID] = append(out[req.ExecutionID], req)
	}
	return out
}

// workflowsOf returns the sorted workflow ids of the executions queued for a blob.
func workflowsOf(queued map[string]*events.ExecutionQueued, blobID string) []string {
	var out []string
	for _, q := range queued {
		if q.BlobID == blobID {
			out = append(out, q.WorkflowID)
		}
	}
	sort.Strings(out)
	return out
}

// asJSON decodes a JSON document as the tests compare it (numbers as float64).
func asJSON(t *testing.T, src string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(src), &v), src)
	return v
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// deadLettered returns the reasons of what MEMMIE_DEADLETTER holds.
func deadLettered(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	if info.State.Msgs == 0 {
		return nil
	}
	var out []string
	for _, ev := range loadEvents(t, js, streams.DeadLetter, "memmie.deadletter.>") {
		out = append(out, fmt.Sprintf("%s: %+v", ev.Subject, ev.Data))
	}
	return out
}
