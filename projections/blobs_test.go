package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// blobHistory builds the deltas of one blob with the pure core, as the blob writer does: a
// created event, then rounds of an updated event (metadata merged) and an execution's output
// (JSON Patch operations, a transform, and in the first round a derived blob), and, when
// deleted, a deleted event. Times are whole microseconds, as Postgres keeps them.
func blobHistory(t testing.TB, id string, rounds int, deleted bool) []events.Delta {
	t.Helper()
	var (
		s   blob.State
		out []events.Delta
	)
	at := func() time.Time { return t0.Add(time.Duration(len(out)) * time.Millisecond) }
	event := func(kind, body string) {
		ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs." + id + "." + kind, Body: []byte(body),
			MsgID: fmt.Sprintf("%s-%s-%d", id, kind, len(out))})
		require.NoError(t, err)
		dec, err := blob.Decide(s, ev, at())
		require.NoError(t, err)
		require.NoError(t, s.Apply(dec.Delta))
		out = append(out, dec.Delta)
	}
	event("created", `{"blob_id": "`+id+`", "user_id": "u1", "content": {"title": "draft", "n": 1e2},
		"metadata": {"type": "chapter", "status": "draft"}}`)
	for r := range rounds {
		event("updated", fmt.Sprintf(`{"blob_id": %q, "metadata": {"status": "round-%d", "type": null, "z": [1, 2.50]}}`, id, r))
		ops := []any{
			map[string]any{"op": "test", "path": "/metadata/status", "value": fmt.Sprintf("round-%d", r)},
			map[string]any{"op": "add", "path": "/content/items", "value": []any{r}},
			map[string]any{"op": "replace", "path": "/metadata/status", "value": "done"},
			map[string]any{"op": "copy", "from": "/content/items", "path": "/metadata/items"},
			map[string]any{"op": "remove", "path": "/metadata/items"},
		}
		output := map[string]any{"delta_operations": ops,
			"transformed_content": map[string]any{"title": fmt.Sprintf("round %d", r), "items": []any{r, "\u0000"}}}
		if r == 0 {
			output["created_blobs"] = []any{map[string]any{"content": "summary", "metadata": map[string]any{"type": "summary"}}}
		}
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: fmt.Sprintf("x-%s-%d", id, r), WorkflowID: "wf", WorkflowRevision: 2,
			ProviderID: "prov", BlobID: id, BaseVersion: s.Version, SourceEventID: "ev-" + id, StepID: "step", Output: output}, at())
		require.NoError(t, err)
		for _, d := range res.Deltas {
			require.NoError(t, s.Apply(d))
			out = append(out, d)
		}
	}
	if deleted {
		event("deleted", `{"blob_id": "`+id+`"}`)
	}
	return out
}

// publishDeltas appends deltas to MEMMIE_DELTAS, each on subject (its blob's when empty), and
// returns the last sequence.
func publishDeltas(t testing.TB, js jetstream.JetStream, subject string, deltas ...events.Delta) uint64 {
	t.Helper()
	var last uint64
	for _, d := range deltas {
		subj := subject
		if subj == "" {
			var err error
			subj, err = events.DeltaSubject(d.BlobID)
			require.NoError(t, err)
		}
		data, err := events.Marshal(events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subj,
			Time: d.Timestamp, Data: &d})
		require.NoError(t, err)
		ack, err := stream.Append(context.Background(), js, streams.Deltas, []stream.Msg{{Subject: subj, Data: data, ID: d.ID}}, stream.Expect{})
		require.NoError(t, err)
		last = ack.LastSeq
	}
	return last
}

// interleaveDeltas orders the blobs' deltas as concurrent writers would append them.
func interleaveDeltas(hs ...[]events.Delta) []events.Delta {
	var out []events.Delta
	for k := 0; ; k++ {
		more := false
		for _, h := range hs {
			if k < len(h) {
				out, more = append(out, h[k]), true
			}
		}
		if !more {
			return out
		}
	}
}

func blobsCheckpoint(t *testing.T, pool *pgxpool.Pool) uint64 {
	t.Helper()
	var last int64
	err := pool.QueryRow(context.Background(), `SELECT last_seq FROM projection_checkpoints WHERE projection = 'blobs' AND stream = $1`,
		streams.Deltas).Scan(&last)
	if err == pgx.ErrNoRows {
		return 0
	}
	require.NoError(t, err)
	return uint64(last)
}

func blobsCaughtUp(t *testing.T, pool *pgxpool.Pool, seq uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return blobsCheckpoint(t, pool) >= seq }, waitFor, 10*time.Millisecond,
		"the blobs checkpoint never reached %d", seq)
}

// versionRows reads a blob's blob_versions rows, as the deltas they hold, and its snapshots.
func versionRows(t *testing.T, pool *pgxpool.Pool, id string) (deltas []events.Delta, snapshots map[int64]string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT delta_id, blob_id, version, base_version, coalesce(provider_id, ''),
			type, coalesce(path, ''), coalesce(from_path, ''), old_value::text, new_value::text, timestamp, lineage::text,
			snapshot::text, coalesce(execution_id, ''), coalesce(step_id, ''), coalesce(workflow_id, ''),
			coalesce(source_event_id, ''), coalesce(workflow_revision, 0)
		FROM blob_versions WHERE blob_id = $1 ORDER BY version`, id)
	require.NoError(t, err)
	defer rows.Close()
	snapshots = map[int64]string{}
	for rows.Next() {
		var (
			d                               events.Delta
			oldV, newV, snap                *string
			lineage, exec, step, wf, source string
			revision                        int
		)
		require.NoError(t, rows.Scan(&d.ID, &d.BlobID, &d.Version, &d.BaseVersion, &d.ProviderID, &d.Type, &d.Path, &d.From,
			&oldV, &newV, &d.Timestamp, &lineage, &snap, &exec, &step, &wf, &source, &revision))
		if oldV != nil {
			d.OldValue = json.RawMessage(*oldV)
		}
		if newV != nil {
			d.NewValue = json.RawMessage(*newV)
		}
		require.NoError(t, json.Unmarshal([]byte(lineage), &d.Metadata))
		// The lineage's columns are the lineage's.
		require.Equal(t, []any{d.Metadata.ExecutionID, d.Metadata.StepID, d.Metadata.WorkflowID, d.Metadata.SourceEventID,
			d.Metadata.WorkflowRevision}, []any{exec, step, wf, source, revision})
		d.Timestamp = d.Timestamp.UTC()
		if snap != nil {
			snapshots[d.Version] = *snap
		}
		deltas = append(deltas, d)
	}
	require.NoError(t, rows.Err())
	return deltas, snapshots
}

// blobRowJSON reads a blobs row as the state's JSON, the seq apart.
func blobRowJSON(t *testing.T, pool *pgxpool.Pool, id string) string {
	t.Helper()
	var (
		s                      blob.State
		user                   *string
		from                   *string
		derived, last, content string
		metadata               string
	)
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT blob_id, user_id, version, content::text, metadata::text,
			deleted, derived_from::text, derived::text, last_delta_id, last::text, updated_at
		FROM blobs WHERE blob_id = $1`, id).Scan(&s.BlobID, &user, &s.Version, &content, &metadata, &s.Deleted, &from,
		&derived, &s.LastDeltaID, &last, &s.UpdatedAt))
	if user != nil {
		s.UserID = *user
	}
	s.Content, s.Metadata = json.RawMessage(content), json.RawMessage(metadata)
	if from != nil {
		require.NoError(t, json.Unmarshal([]byte(*from), &s.DerivedFrom))
	}
	require.NoError(t, json.Unmarshal([]byte(derived), &s.Derived))
	require.NoError(t, json.Unmarshal([]byte(last), &s.Last))
	s.UpdatedAt = s.UpdatedAt.UTC()
	b, err := json.Marshal(&s)
	require.NoError(t, err)
	return string(b)
}

func foldJSON(t *testing.T, deltas []events.Delta) string {
	t.Helper()
	s, err := blob.Fold(deltas)
	require.NoError(t, err)
	b, err := json.Marshal(&s)
	require.NoError(t, err)
	return string(b)
}

// dumpBlobs returns every row of blobs and blob_versions as JSON text.
func dumpBlobs(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT row_to_json(b)::text FROM blobs b ORDER BY blob_id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	rows, err = pool.Query(context.Background(), `SELECT row_to_json(v)::text FROM blob_versions v ORDER BY blob_id, version`)
	require.NoError(t, err)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return append(out, vs...)
}

// The blobs projection holds, for every blob, the delta of each version as it was appended,
// the state at each snapshot version as blob.Fold gives it, and the current state as Fold of
// every delta gives it; applying the stream again changes nothing, and a rebuild gives the
// same rows.
func TestBlobsProjectionEqualsFold(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	hs := [][]events.Delta{blobHistory(t, "b1", 4, false), blobHistory(t, "b2", 2, true), blobHistory(t, "b3", 0, false)}
	require.Greater(t, len(hs[0]), 20)
	last := publishDeltas(t, js, "", interleaveDeltas(hs...)...)

	p := projections.NewBlobs(nil)
	p.SetSnapshotEvery(4)
	r := start(t, newRunner(t, p, pool, js, projections.Config{BatchSize: 7}))
	blobsCaughtUp(t, pool, last)

	check := func(pool *pgxpool.Pool) {
		t.Helper()
		for _, h := range hs {
			id := h[0].BlobID
			got, snaps := versionRows(t, pool, id)
			require.Equal(t, h, got, "%s: one row per delta, as appended", id)
			for v := int64(1); v <= int64(len(h)); v++ {
				if v == 1 || v%4 == 0 {
					require.Contains(t, snaps, v, "%s: a snapshot at version %d", id, v)
					assert.JSONEq(t, foldJSON(t, h[:v]), snaps[v], "%s: the snapshot at version %d is Fold's", id, v)
					require.Equal(t, foldJSON(t, h[:v]), snaps[v], "%s: byte for byte", id)
				}
			}
			require.Len(t, snaps, 1+len(h)/4, id)
			require.Equal(t, foldJSON(t, h), blobRowJSON(t, pool, id), "%s: the current state is Fold's", id)
		}
	}
	check(pool)
	var deleted bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT deleted FROM blobs WHERE blob_id = 'b2'`).Scan(&deleted))
	require.True(t, deleted)
	var derived string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT derived::text FROM blobs WHERE blob_id = 'b1'`).Scan(&derived))
	require.Equal(t, `["`+blob.DerivedBlobID("x-b1-0", 0)+`"]`, derived)

	// The whole stream again, from the first message: nothing changes.
	before := dumpBlobs(t, pool)
	r.stop()
	_, err := pool.Exec(context.Background(), `UPDATE projection_checkpoints SET last_seq = 0 WHERE projection = 'blobs'`)
	require.NoError(t, err)
	start(t, newRunner(t, p, pool, js, projections.Config{BatchSize: 5}))
	blobsCaughtUp(t, pool, last)
	require.Equal(t, before, dumpBlobs(t, pool), "a replay changes nothing")

	// A rebuild into fresh tables gives the same rows, and keeps the indexes.
	indexes := [][]string{tableIndexes(t, pool, "blobs"), tableIndexes(t, pool, "blob_versions")}
	require.Len(t, indexes[1], 3)
	_, err = projections.Rebuild(context.Background(), p, projections.RebuildConfig{Pool: pool, JS: js, BatchSize: 9})
	require.NoError(t, err)
	blobsCaughtUp(t, pool, last)
	require.Equal(t, before, dumpBlobs(t, pool), "a rebuild gives the same rows")
	require.Equal(t, indexes, [][]string{tableIndexes(t, pool, "blobs"), tableIndexes(t, pool, "blob_versions")})
	check(pool)

	info, err := js.Stream(context.Background(), streams.DeadLetter)
	require.NoError(t, err)
	require.Zero(t, info.CachedInfo().State.Msgs, "nothing dead-lettered")
}

// A delta that cannot apply (a version gap, a delta of another blob's subject, one after a
// delete) is dead-lettered with its reason; the blob keeps its versions before it, and the
// other blobs go on.
func TestBlobsProjectionDeadLettersWhatCannotApply(t *testing.T) {
	js := setup(t)
	pool := pgtest.New(t)
	a, b := blobHistory(t, "a", 1, false), blobHistory(t, "b", 0, true)
	publishDeltas(t, js, "", a[:3]...)
	gapSeq := publishDeltas(t, js, "", a[4]) // version 5 after 3
	wrong := b[0]
	wrong.ID = "wrong-subject"
	wrongSeq := publishDeltas(t, js, "memmie.deltas.a", wrong)
	publishDeltas(t, js, "", b...)
	afterDelete := a[3]
	afterDelete.BlobID, afterDelete.ID, afterDelete.Version = "b", "after-delete", int64(len(b)+1)
	lateSeq := publishDeltas(t, js, "", afterDelete)
	last := publishDeltas(t, js, "", blobHistory(t, "c", 0, false)...)

	start(t, newRunner(t, projections.NewBlobs(nil), pool, js, projections.Config{BatchSize: 100}))
	blobsCaughtUp(t, pool, last)

	require.Equal(t, foldJSON(t, a[:3]), blobRowJSON(t, pool, "a"), "a keeps its versions before the gap")
	require.Equal(t, foldJSON(t, b), blobRowJSON(t, pool, "b"))
	require.Equal(t, foldJSON(t, blobHistory(t, "c", 0, false)), blobRowJSON(t, pool, "c"))

	dls := readDeadLetters(t, js)
	require.Len(t, dls, 3)
	for i, want := range []struct {
		seq    uint64
		reason string
	}{{gapSeq, "version 5 after 3"}, {wrongSeq, `on subject "memmie.deltas.a"`}, {lateSeq, "the blob was deleted"}} {
		dl := dls[i]
		assert.Equal(t, "projection-blobs", dl.Source)
		assert.Equal(t, streams.Deltas, dl.Stream)
		assert.Equal(t, want.seq, dl.Sequence)
		assert.Contains(t, dl.Reason, want.reason)
	}
}

// readDeadLetters returns the dead letters of MEMMIE_DEADLETTER, in order.
func readDeadLetters(t *testing.T, js jetstream.JetStream) []*events.DeadLetter {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, streams.DeadLetter)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*events.DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		if dl, ok := ev.Data.(*events.DeadLetter); ok {
			out = append(out, dl)
		}
	}
	return out
}
