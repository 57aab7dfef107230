package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
)

// natsWithStreams starts a JetStream server with memmie's streams and returns its URL.
func natsWithStreams(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv, _, js := natstest.Run(t)
	require.NoError(t, stream.Ensure(context.Background(), js, engine.StreamConfigs(streams.Options{}), nil))
	return srv.ClientURL(), js
}

// lastBlobEvent returns the last message of MEMMIE_BLOBS published on subject
// (memmie.blobs.<id>.<kind>, stored under its partition), with that subject, and the stream's
// count.
func lastBlobEvent(t *testing.T, js jetstream.JetStream, subject string) (*jetstream.RawStreamMsg, uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), streams.Blobs)
	require.NoError(t, err)
	stored := strings.Replace(subject, "memmie.blobs.", "memmie.blobs.*.", 1)
	m, err := s.GetLastMsgForSubject(context.Background(), stored)
	require.NoError(t, err)
	// As the blob writer reads it: under the subject it was published to.
	_, m.Subject, err = streams.ParseBlobPartitionSubject(m.Subject)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return m, info.State.Msgs
}

// TestBlobsPublish: blobs publish stores the contract's data object on
// memmie.blobs.<id>.<kind> with a Nats-Msg-Id, random unless --msg-id names one; the blob
// writer's parser takes it as the event given. An event that breaks the contract is not
// published.
func TestBlobsPublish(t *testing.T) {
	url, js := natsWithStreams(t)
	publish := func(args ...string) (int, string, string) {
		return executeSplit(t, append([]string{"blobs", "publish", "--nats-url", url}, args...)...)
	}

	data := `{"user_id": "u1", "provider_ids": ["book-writer"], "content": {"text": "It was night."}, "metadata": {"type": "chapter"}}`
	code, out, errOut := publish("b1", "created", "--data", data)
	require.Equal(t, 0, code, errOut)
	m, n := lastBlobEvent(t, js, "memmie.blobs.b1.created")
	require.Equal(t, uint64(1), n)
	assert.Equal(t, `{"blob_id":"b1","user_id": "u1", "provider_ids": ["book-writer"], "content": {"text": "It was night."}, "metadata": {"type": "chapter"}}`,
		string(m.Data), "the data as given, with the blob id it lacked")
	id := m.Header.Get("Nats-Msg-Id")
	_, err := uuid.Parse(id)
	require.NoError(t, err, "a random Nats-Msg-Id: %q", id)
	assert.Equal(t, fmt.Sprintf("published memmie.blobs.b1.created (MEMMIE_BLOBS seq 1, Nats-Msg-Id %s)\n", id), out)
	ev, err := blob.Parse(blob.Message{Subject: m.Subject, Body: m.Data, MsgID: id})
	require.NoError(t, err)
	assert.Equal(t, id, ev.ID)
	assert.Equal(t, []string{"book-writer"}, ev.Data.ProviderIDs)
	assert.Equal(t, events.BlobCreated, ev.Kind())

	// Again: a new event.
	code, _, errOut = publish("b1", "created", "--data", data)
	require.Equal(t, 0, code, errOut)
	m2, n := lastBlobEvent(t, js, "memmie.blobs.b1.created")
	require.Equal(t, uint64(2), n, "a second run is a second event")
	assert.NotEqual(t, id, m2.Header.Get("Nats-Msg-Id"))

	// --msg-id: twice is once. From a file, with its blob_id.
	file := filepath.Join(t.TempDir(), "update.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"blob_id": "b1", "metadata": {"status": "final"}}`+"\n"), 0o600))
	code, _, errOut = publish("b1", "updated", "--data", "@"+file, "--msg-id", "upd-1")
	require.Equal(t, 0, code, errOut)
	code, out, errOut = publish("b1", "updated", "--data", "@"+file, "--msg-id", "upd-1", "--json")
	require.Equal(t, 0, code, errOut)
	var p published
	require.NoError(t, json.Unmarshal([]byte(out), &p), out)
	assert.Equal(t, published{Subject: "memmie.blobs.b1.updated", Stream: streams.Blobs, Seq: 3, MsgID: "upd-1", Duplicate: true}, p)
	m3, n := lastBlobEvent(t, js, "memmie.blobs.b1.updated")
	require.Equal(t, uint64(3), n, "the same --msg-id twice stores one event")
	assert.Equal(t, `{"blob_id": "b1", "metadata": {"status": "final"}}`+"\n", string(m3.Data))
	assert.Equal(t, "upd-1", m3.Header.Get("Nats-Msg-Id"))

	// deleted needs no data; a CloudEvents envelope goes as it is.
	code, _, errOut = publish("b1", "deleted")
	require.Equal(t, 0, code, errOut)
	m4, _ := lastBlobEvent(t, js, "memmie.blobs.b1.deleted")
	assert.Equal(t, `{"blob_id":"b1"}`, string(m4.Data))
	env := `{"specversion": "1.0", "id": "ce-1", "source": "studio", "type": "memmie.blob.created", "data": {"blob_id": "b2"}}`
	code, _, errOut = publish("b2", "created", "--data", env)
	require.Equal(t, 0, code, errOut)
	m5, n := lastBlobEvent(t, js, "memmie.blobs.b2.created")
	assert.Equal(t, env, string(m5.Data))
	require.Equal(t, uint64(5), n)

	// What memmie would dead-letter for its shape is not published.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"b1", "updated", "--data", `{"blob_id": "b2", "content": 1}`}, "differs from the subject's"},
		{[]string{"b1", "updated", "--data", `{"content": 1, "provider_id": "x"}`}, "provider_id"},
		{[]string{"b1", "updated", "--data", `{}`}, "content and/or metadata"},
		{[]string{"b1", "created", "--data", `{"metadata": []}`}, "metadata"},
		{[]string{"b1", "created", "--data", `{`}, "not JSON"},
		{[]string{"b1", "renamed"}, "renamed"},
		{[]string{"a.b", "created"}, "a.b"},
	} {
		code, _, errOut := publish(c.args...)
		assert.Equal(t, 1, code, "%v", c.args)
		assert.Contains(t, errOut, c.want, "%v", c.args)
	}
	_, n = lastBlobEvent(t, js, "memmie.blobs.b2.created")
	require.Equal(t, uint64(5), n, "nothing more was published")
}

// testDeltas builds two blobs' deltas with the pure core and appends them to MEMMIE_DELTAS,
// interleaved, as the blob writer would.
func testDeltas(t *testing.T, js jetstream.JetStream) (b1, b2 []events.Delta) {
	t.Helper()
	at := time.Date(2026, 4, 5, 6, 7, 8, 0, time.UTC)
	build := func(id string) []events.Delta {
		var (
			s   blob.State
			out []events.Delta
		)
		for i, m := range []blob.Message{
			{Subject: "memmie.blobs." + id + ".created", Body: []byte(`{"blob_id": "` + id + `", "user_id": "u1", "content": "draft", "metadata": {"type": "chapter"}}`), MsgID: id + "-c"},
			{Subject: "memmie.blobs." + id + ".updated", Body: []byte(`{"blob_id": "` + id + `", "metadata": {"status": "review"}}`), MsgID: id + "-u"},
		} {
			ev, err := blob.Parse(m)
			require.NoError(t, err)
			dec, err := blob.Decide(s, ev, at.Add(time.Duration(i)*time.Second))
			require.NoError(t, err)
			require.NoError(t, s.Apply(dec.Delta))
			out = append(out, dec.Delta)
		}
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: "x-" + id, WorkflowID: "wf", WorkflowRevision: 3, ProviderID: "p",
			BlobID: id, BaseVersion: s.Version, SourceEventID: id + "-c", StepID: "edit", Output: map[string]any{
				"delta_operations":    []any{map[string]any{"op": "add", "path": "/metadata/summary", "value": "night"}},
				"transformed_content": "It was a dark and stormy night.",
			}}, at.Add(time.Minute))
		require.NoError(t, err)
		return append(out, res.Deltas...)
	}
	b1, b2 = build("b1"), build("b2")
	for i := range b1 {
		for _, d := range []events.Delta{b1[i], b2[i]} {
			appendDelta(t, js, d)
		}
	}
	return b1, b2
}

func appendDelta(t *testing.T, js jetstream.JetStream, d events.Delta) {
	t.Helper()
	subj, err := events.DeltaSubject(d.BlobID)
	require.NoError(t, err)
	data, err := events.Marshal(events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subj, Time: d.Timestamp, Data: &d})
	require.NoError(t, err)
	_, err = stream.Append(context.Background(), js, streams.Deltas, []stream.Msg{{Subject: subj, Data: data, ID: d.ID}}, stream.Expect{})
	require.NoError(t, err)
}

// TestDeltasTail: deltas tail --from-start replays the deltas, one line each (one blob's with
// BLOB_ID, the envelopes with --json); without it, it follows what is appended from then on.
func TestDeltasTail(t *testing.T) {
	url, js := natsWithStreams(t)
	b1, b2 := testDeltas(t, js)

	code, out, errOut := executeSplit(t, "deltas", "tail", "--from-start", "--no-follow", "--nats-url", url)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, strings.Join([]string{
		`2026-04-05T06:07:08Z b1 v1 create = {"content":"draft","metadata":{"type":"chapter"}} (event b1-c)`,
		`2026-04-05T06:07:08Z b2 v1 create = {"content":"draft","metadata":{"type":"chapter"}} (event b2-c)`,
		`2026-04-05T06:07:09Z b1 v2 update = {"metadata":{"status":"review","type":"chapter"}} (event b1-u)`,
		`2026-04-05T06:07:09Z b2 v2 update = {"metadata":{"status":"review","type":"chapter"}} (event b2-u)`,
		`2026-04-05T06:08:08Z b1 v3 add /metadata/summary = "night" (execution x-b1 of wf revision 3, step edit)`,
		`2026-04-05T06:08:08Z b2 v3 add /metadata/summary = "night" (execution x-b2 of wf revision 3, step edit)`,
		`2026-04-05T06:08:08Z b1 v4 transform /content = "It was a dark and stormy night." (execution x-b1 of wf revision 3, step edit)`,
		`2026-04-05T06:08:08Z b2 v4 transform /content = "It was a dark and stormy night." (execution x-b2 of wf revision 3, step edit)`,
	}, "\n")+"\n", out)

	code, out, errOut = executeSplit(t, "deltas", "tail", "b2", "--from-start", "--no-follow", "--json", "--nats-url", url)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(b2))
	for i, line := range lines {
		ev, err := events.Decode([]byte(line))
		require.NoError(t, err, line)
		assert.Equal(t, b2[i].ID, ev.ID)
		assert.Equal(t, "memmie.deltas.b2", ev.Subject)
		d := ev.Data.(*events.Delta)
		assert.Equal(t, b2[i].Version, d.Version)
		assert.JSONEq(t, string(b2[i].NewValue), string(d.NewValue))
	}

	// Nothing yet for a blob without deltas: --no-follow ends at once.
	code, out, errOut = executeSplit(t, "deltas", "tail", "b3", "--from-start", "--no-follow", "--nats-url", url)
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, out)

	// Following: only what comes after the start.
	bg := startBackground(t, "deltas", "tail", "b1", "--nats-url", url)
	var s blob.State
	for _, d := range b1 {
		require.NoError(t, s.Apply(d))
	}
	// The consumer may start after the append below; appending until a line comes is safe,
	// since each append is a new version.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(bg.out.String(), " b1 v") {
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: fmt.Sprintf("late-%d", s.Version), BlobID: "b1", BaseVersion: s.Version,
			Output: map[string]any{"transformed_content": "later"}}, time.Date(2026, 4, 6, 0, 0, 0, 0, time.UTC))
		require.NoError(t, err)
		require.NoError(t, s.Apply(res.Deltas[0]))
		appendDelta(t, js, res.Deltas[0])
		require.True(t, time.Now().Before(deadline), "deltas tail printed nothing within 60s:\n%s", bg.out.String())
		waitUntil(t, 2*time.Second, func() bool { return strings.Contains(bg.out.String(), " b1 v") })
	}
	require.NoError(t, bg.stop(t))
	out = bg.out.String()
	assert.NotContains(t, out, " b1 v1 ", "not from the start")
	assert.NotContains(t, out, " b2 ")
	assert.Regexp(t, `^2026-04-06T00:00:00Z b1 v\d+ transform /content = "later" \(execution late-\d+\)\n`, out)
}

// waitUntil polls cond for up to d.
func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end) && !cond(); {
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBlobsShow: blobs show prints a blob from a real serve's blobs projection, at its last
// version and at --version N, as the pure core folds it; an unknown blob or version is an
// error. blobs diff prints what changed between two versions, by default the last change.
func TestBlobsShow(t *testing.T) {
	url, js := natsWithStreams(t)
	b1, _ := testDeltas(t, js)
	srv := startBackground(t, "serve", "--nats-url", url, "--http-addr", "127.0.0.1:0", "--database-url", pgtest.URL(t))
	apiURL := srv.ready(t)

	show := func(args ...string) (int, string, string) {
		return executeSplit(t, append([]string{"blobs", "show", "--api-url", apiURL}, args...)...)
	}
	want, err := blob.Fold(b1)
	require.NoError(t, err)
	wantJSON, err := json.Marshal(&want)
	require.NoError(t, err)
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out, _ := show("b1", "--json")
		if code == 0 && strings.Contains(out, `"version": 4`) {
			assert.JSONEq(t, string(wantJSON), out)
			break
		}
		require.True(t, time.Now().Before(deadline), "blobs show b1 not at version 4 within 60s: %s\n%s", out, srv.out.String())
		time.Sleep(50 * time.Millisecond)
	}

	code, out, errOut := show("b1")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, `blob:         b1
version:      4
owner:        u1
deleted:      false
updated at:   2026-04-05T06:08:08Z
last change:  `+b1[3].ID+` (execution x-b1 of wf revision 3, step edit)
content:      "It was a dark and stormy night."
metadata:     {
                "status": "review",
                "summary": "night",
                "type": "chapter"
              }
`, out)

	code, out, errOut = show("b1", "--version", "1", "--json")
	require.Equal(t, 0, code, errOut)
	v1, err := blob.Fold(b1[:1])
	require.NoError(t, err)
	v1JSON, err := json.Marshal(&v1)
	require.NoError(t, err)
	assert.JSONEq(t, string(v1JSON), out)

	code, _, errOut = show("b1", "--version", "5")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not_found")
	code, _, errOut = show("nope")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not_found: ")
	code, _, errOut = show("b1", "--version", "0")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "versions count from 1")

	// blobs diff, on the same serve.
	diff := func(args ...string) (int, string, string) {
		return executeSplit(t, append([]string{"blobs", "diff", "--api-url", apiURL}, args...)...)
	}
	code, out, errOut = diff("b1")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, `blob b1, version 3 to 4:
  replace /content "It was a dark and stormy night."
`, out)
	code, out, errOut = diff("b1", "--from", "1", "--to", "3")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, `blob b1, version 1 to 3:
  add /metadata/status "review"
  add /metadata/summary "night"
`, out)
	code, out, errOut = diff("b1", "--to", "2", "--from", "2")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "blob b1, version 2 to 2: no change\n", out)
	code, out, errOut = diff("b1", "--to", "2", "--json")
	require.Equal(t, 0, code, errOut)
	assert.JSONEq(t, `{"blob_id": "b1", "from": 1, "to": 2, "patch": [{"op": "add", "path": "/metadata/status", "value": "review"}]}`, out)
	code, _, errOut = diff("b1", "--to", "5")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "bad_request")
	assert.Contains(t, errOut, "to 5: blob b1 has versions 1 to 4")
	code, _, errOut = diff("nope")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not_found: ")
	code, _, errOut = diff("b1", "--from", "-1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "--from -1: versions count from 0")
}

// TestBlobsAsTheClientUser: under the repository's nats.conf, blobs publish and deltas tail
// work as its client user, as any client would.
func TestBlobsAsTheClientUser(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{ConfigFile: "../../nats.conf", Port: -1, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	engineConn, err := nats.Connect(srv.ClientURL(), nats.UserInfo("engine", "engine-dev-password"), nats.CustomInboxPrefix(events.EngineInboxPrefix))
	require.NoError(t, err)
	t.Cleanup(engineConn.Close)
	js, err := jetstream.New(engineConn)
	require.NoError(t, err)
	require.NoError(t, stream.Ensure(context.Background(), js, engine.StreamConfigs(streams.Options{}), nil))
	b1, _ := testDeltas(t, js)

	client := []string{"--nats-url", srv.ClientURL(), "--nats-user", "client", "--nats-password", "client-dev-password"}
	code, out, errOut := executeSplit(t, append([]string{"blobs", "publish", "b9", "created", "--data", `{"content": 1}`}, client...)...)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "published memmie.blobs.b9.created (MEMMIE_BLOBS seq 1")
	m, n := lastBlobEvent(t, js, "memmie.blobs.b9.created")
	require.Equal(t, uint64(1), n)
	assert.Equal(t, `{"blob_id":"b9","content": 1}`, string(m.Data))

	code, out, errOut = executeSplit(t, append([]string{"deltas", "tail", "b1", "--from-start", "--no-follow"}, client...)...)
	require.Equal(t, 0, code, errOut)
	assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), len(b1), out)
	assert.Contains(t, out, " b1 v4 transform /content ")
}
