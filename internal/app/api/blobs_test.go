package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// blobDeltas builds a blob's deltas with the pure core, as the blob writer does: its created
// event, then executions of ten JSON Patch operations each and an updated event after each,
// until it has at least n versions. Times are whole microseconds, as Postgres keeps them.
func blobDeltas(t *testing.T, id string, n int) []events.Delta {
	t.Helper()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var (
		s   blob.State
		out []events.Delta
	)
	event := func(kind, body string) {
		ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs." + id + "." + kind, Body: []byte(body), MsgID: fmt.Sprintf("%s-%d", id, len(out))})
		require.NoError(t, err)
		dec, err := blob.Decide(s, ev, at.Add(time.Duration(len(out))*time.Microsecond))
		require.NoError(t, err)
		require.NoError(t, s.Apply(dec.Delta))
		out = append(out, dec.Delta)
	}
	event("created", `{"blob_id": "`+id+`", "user_id": "u1", "content": {"items": []}, "metadata": {"type": "list"}}`)
	for x := 0; len(out) < n; x++ {
		var ops []any
		for k := range 10 {
			ops = append(ops, map[string]any{"op": "add", "path": "/content/items/-", "value": map[string]any{"x": x, "k": k}})
		}
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: fmt.Sprintf("%s-x%d", id, x), WorkflowID: "wf", WorkflowRevision: 1,
			ProviderID: "p", BlobID: id, BaseVersion: s.Version, SourceEventID: id + "-0", StepID: "s",
			Output: map[string]any{"delta_operations": ops}}, at.Add(time.Duration(len(out))*time.Microsecond))
		require.NoError(t, err)
		for _, d := range res.Deltas {
			require.NoError(t, s.Apply(d))
			out = append(out, d)
		}
		event("updated", fmt.Sprintf(`{"blob_id": %q, "metadata": {"round": %d}}`, id, x))
	}
	return out
}

// appendDeltas appends deltas to MEMMIE_DELTAS, as the blob writer does, and returns the last
// sequence.
func appendDeltas(t *testing.T, js jetstream.JetStream, deltas []events.Delta) uint64 {
	t.Helper()
	var last uint64
	for _, d := range deltas {
		subj, err := events.DeltaSubject(d.BlobID)
		require.NoError(t, err)
		data, err := events.Marshal(events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subj, Time: d.Timestamp, Data: &d})
		require.NoError(t, err)
		ack, err := stream.Append(context.Background(), js, streams.Deltas, []stream.Msg{{Subject: subj, Data: data, ID: d.ID}}, stream.Expect{})
		require.NoError(t, err)
		last = ack.LastSeq
	}
	return last
}

// states returns the blob's state's JSON after each delta, folded one delta at a time:
// states[v-1] is version v.
func states(t *testing.T, deltas []events.Delta) []string {
	t.Helper()
	var (
		s   blob.State
		out []string
	)
	for _, d := range deltas {
		require.NoError(t, s.Apply(d))
		b, err := json.Marshal(&s)
		require.NoError(t, err)
		out = append(out, string(b))
	}
	return out
}

// snapshotEdges are the versions of a blob of n versions where a view's fold on the nearest
// snapshot begins, turns or goes furthest: each snapshot's version (1 and every
// projections.BlobSnapshotEvery), the versions either side of it, one mid-way, and the last.
func snapshotEdges(n int) []int {
	var out []int
	add := func(v int) {
		if v >= 1 && v <= n && (len(out) == 0 || out[len(out)-1] < v) {
			out = append(out, v)
		}
	}
	add(1)
	add(2)
	for s := projections.BlobSnapshotEvery; s <= n+1; s += projections.BlobSnapshotEvery {
		add(s - projections.BlobSnapshotEvery/2)
		add(s - 1)
		add(s)
		add(s + 1)
	}
	add(n - 1)
	add(n)
	return out
}

// TestBlobEndpoints: GET /v1/blobs/{id} is the blob as blob.Fold gives it, at its last version
// and with ?version=N on either side of every snapshot the projection keeps; its deltas come
// in version order, a page at a time; an unknown blob or version is 404; /diff gives patches
// from any version to any other. One server, database and projection serve every part, as
// each only reads; Postgres goes down last.
func TestBlobEndpoints(t *testing.T) {
	_, _, js := natstest.Run(t)
	reg := startRegistry(t, js)
	pool := pgtest.New(t)
	h := blobDeltas(t, "b1", 2*projections.BlobSnapshotEvery+30)
	other := blobDeltas(t, "b2", 5)
	d1 := diffHistory(t, "d1")
	last := appendDeltas(t, js, slices.Concat(h, other, d1))
	runProjections(t, projections.Config{Pool: pool, JS: js, Log: testLogger(t)}, projections.NewBlobs(testLogger(t)))
	srv := serveAPI(t, api.Config{Registry: reg, Views: views.New(pool), Postgres: pool.Ping, Logger: testLogger(t)})
	require.Eventually(t, func() bool {
		var seq int64
		_ = pool.QueryRow(context.Background(), `SELECT last_seq FROM projection_checkpoints WHERE projection = 'blobs'`).Scan(&seq)
		return uint64(seq) >= last
	}, 60*time.Second, 10*time.Millisecond)

	t.Run("versions", func(t *testing.T) { testBlobVersions(t, srv, h) })
	t.Run("deltas", func(t *testing.T) { testBlobDeltas(t, srv, h, other) })
	t.Run("diff", func(t *testing.T) { testBlobDiff(t, srv, d1) })
	t.Run("errors", func(t *testing.T) { testBlobErrors(t, srv, other) })

	// Postgres down: 503 naming postgres, as the lists answer.
	pool.Close()
	for _, path := range []string{"/v1/blobs/b1", "/v1/blobs/b1?version=3", "/v1/blobs/b1/deltas", "/v1/blobs/d1/diff"} {
		r := do(t, srv, http.MethodGet, path, "")
		assert.Equal(t, http.StatusServiceUnavailable, r.Status, r.Raw)
		e, _ := r.Body["error"].(map[string]any)
		assert.Equal(t, "postgres", e["dependency"], r.Raw)
	}
}

func testBlobVersions(t *testing.T, srv *httptest.Server, h []events.Delta) {
	want := states(t, h)
	r := do(t, srv, http.MethodGet, "/v1/blobs/b1", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.JSONEq(t, want[len(h)-1], r.Raw)
	assert.Equal(t, float64(len(h)), r.Body["version"])
	edges := snapshotEdges(len(h))
	require.Subset(t, edges, []int{1, 2, 50, 99, 100, 101, 150, 199, 200, 201, len(h)})
	for _, v := range edges {
		r := do(t, srv, http.MethodGet, "/v1/blobs/b1?version="+strconv.Itoa(v), "")
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
		require.JSONEq(t, want[v-1], r.Raw, "version %d", v)
	}
}

func testBlobDeltas(t *testing.T, srv *httptest.Server, h, other []events.Delta) {

	// The deltas, a page at a time, are those appended.
	var got []events.Delta
	pages := 0
	for after := ""; ; pages++ {
		path := "/v1/blobs/b1/deltas?limit=64"
		if after != "" {
			path += "&after=" + after
		}
		r := do(t, srv, http.MethodGet, path, "")
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
		var page views.BlobDeltaPage
		require.NoError(t, json.Unmarshal([]byte(r.Raw), &page))
		got = append(got, page.Deltas...)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	require.Equal(t, h, got)
	require.Equal(t, (len(h)+63)/64-1, pages)
	r := do(t, srv, http.MethodGet, "/v1/blobs/b2/deltas", "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.Len(t, r.Body["deltas"], len(other))
	r = do(t, srv, http.MethodGet, "/v1/blobs/b2/deltas?after="+strconv.Itoa(len(other)), "")
	require.Equal(t, http.StatusOK, r.Status, r.Raw)
	require.Equal(t, []any{}, r.Body["deltas"], "after the last version: none")
}

func testBlobErrors(t *testing.T, srv *httptest.Server, other []events.Delta) {

	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/blobs/nope", 404, "not_found"},
		{"/v1/blobs/nope?version=1", 404, "not_found"},
		{"/v1/blobs/nope/deltas", 404, "not_found"},
		{"/v1/blobs/b2?version=" + strconv.Itoa(len(other)+1), 404, "not_found"},
		{"/v1/blobs/b2?version=0", 400, "bad_request"},
		{"/v1/blobs/b2?version=x", 400, "bad_request"},
		{"/v1/blobs/b2/deltas?limit=0", 400, "bad_request"},
		{"/v1/blobs/b2/deltas?limit=1001", 400, "bad_request"},
		{"/v1/blobs/b2/deltas?after=-1", 400, "bad_request"},
		{"/v1/blobs/a.b", 400, "bad_request"},
	} {
		r := do(t, srv, http.MethodGet, c.path, "")
		assert.Equal(t, c.status, r.Status, "%s: %s", c.path, r.Raw)
		assert.Equal(t, c.code, r.errorCode(), "%s: %s", c.path, r.Raw)
	}
}

// Without a database, the blob endpoints answer 503.
func TestBlobEndpointsWithoutADatabase(t *testing.T) {
	srv := httptest.NewServer(mustAPI(t, api.Config{Registry: startRegistryOn(t), Logger: testLogger(t)}))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/v1/blobs/b1", "/v1/blobs/b1?version=1", "/v1/blobs/b1/deltas", "/v1/blobs/b1/diff"} {
		assertNoDatabase(t, do(t, srv, http.MethodGet, path, ""))
	}
}

func mustAPI(t *testing.T, cfg api.Config) *api.API {
	t.Helper()
	h, err := api.New(cfg)
	require.NoError(t, err)
	return h
}

// BenchmarkBlobAt measures GET /v1/blobs/{id}?version=N on a blob of 10,000 versions (a 1 KiB
// content, ten metadata keys replaced in turn): the view folds at most
// projections.BlobSnapshotEvery-1 deltas on a snapshot, against "fold", which reads every
// delta up to N and folds them from version 1, as an answer without snapshots would.
func BenchmarkBlobAt(b *testing.B) {
	_, _, js := natstest.Run(b)
	require.NoError(b, stream.Ensure(context.Background(), js, engine.StreamConfigs(streams.Options{}), nil))
	pool := pgtest.New(b)
	const versions = 10000
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var (
		s   blob.State
		all []events.Delta
	)
	ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs.big.created", MsgID: "c",
		Body: []byte(fmt.Sprintf(`{"blob_id": "big", "content": %q, "metadata": {}}`, strings.Repeat("x", 1024)))})
	require.NoError(b, err)
	dec, err := blob.Decide(s, ev, at)
	require.NoError(b, err)
	require.NoError(b, s.Apply(dec.Delta))
	all = append(all, dec.Delta)
	for x := 0; len(all) < versions; x++ {
		var ops []any
		for k := range 10 {
			ops = append(ops, map[string]any{"op": "add", "path": fmt.Sprintf("/metadata/k%d", k), "value": x})
		}
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: fmt.Sprintf("x%d", x), BlobID: "big", BaseVersion: s.Version,
			Output: map[string]any{"delta_operations": ops}}, at)
		require.NoError(b, err)
		for _, d := range res.Deltas {
			require.NoError(b, s.Apply(d))
			all = append(all, d)
		}
	}
	all = all[:versions]
	ctx := context.Background()
	var msgs []stream.Msg
	for _, d := range all {
		data, err := events.Marshal(events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: "memmie.deltas.big", Time: d.Timestamp, Data: &d})
		require.NoError(b, err)
		msgs = append(msgs, stream.Msg{Subject: "memmie.deltas.big", Data: data, ID: d.ID})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 100)
		_, err := stream.Append(ctx, js, streams.Deltas, msgs[:n], stream.Expect{})
		require.NoError(b, err)
		msgs = msgs[n:]
	}
	began := time.Now()
	stop := runProjections(b, projections.Config{Pool: pool, JS: js}, projections.NewBlobs(nil))
	require.Eventually(b, func() bool {
		var seq int64
		_ = pool.QueryRow(ctx, `SELECT last_seq FROM projection_checkpoints WHERE projection = 'blobs'`).Scan(&seq)
		return seq >= versions
	}, 5*time.Minute, 10*time.Millisecond)
	b.Logf("projected %d deltas in %s", versions, time.Since(began).Round(time.Millisecond))
	stop()
	v := views.New(pool)
	version := func(i int) int64 { return int64(versions - 1 - (i*37)%(versions/2)) } // deep in the history, never a snapshot's
	b.Run("snapshot", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			st, err := v.BlobAt(ctx, "big", version(i))
			if err != nil || st.Version != version(i) {
				b.Fatal(err)
			}
		}
	})
	b.Run("fold", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			var deltas []events.Delta
			for after := int64(0); ; {
				page, err := v.BlobDeltas(ctx, "big", after, api.MaxDeltaLimit)
				require.NoError(b, err)
				for _, d := range page.Deltas {
					if d.Version <= version(i) {
						deltas = append(deltas, d)
					}
				}
				if page.Next == "" || deltas[len(deltas)-1].Version >= version(i) {
					break
				}
				after = deltas[len(deltas)-1].Version
			}
			st, err := blob.Fold(deltas)
			if err != nil || st.Version != version(i) {
				b.Fatal(err)
			}
		}
	})
}
