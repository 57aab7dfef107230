package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// diffHistory builds a blob's deltas with the pure core: a create, outputs that change nested
// objects and arrays (add, insert, remove, replace, move, copy), a number beyond 2^53, a
// derived blob, an update, a transform and a delete.
func diffHistory(t *testing.T, id string) []events.Delta {
	t.Helper()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var (
		s   blob.State
		out []events.Delta
	)
	now := func() time.Time { return at.Add(time.Duration(len(out)) * time.Microsecond) }
	event := func(kind, body string) {
		ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs." + id + "." + kind, Body: []byte(body), MsgID: fmt.Sprintf("%s-%d", id, len(out))})
		require.NoError(t, err)
		dec, err := blob.Decide(s, ev, now())
		require.NoError(t, err)
		require.NoError(t, s.Apply(dec.Delta))
		out = append(out, dec.Delta)
	}
	output := func(x int, o string) {
		var v map[string]any
		d := json.NewDecoder(strings.NewReader(o))
		d.UseNumber() // as an execution's output keeps them
		require.NoError(t, d.Decode(&v))
		res, err := blob.Deltas(s, blob.Execution{ExecutionID: fmt.Sprintf("%s-x%d", id, x), WorkflowID: "wf", WorkflowRevision: 1,
			ProviderID: "p", BlobID: id, BaseVersion: s.Version, SourceEventID: id + "-0", StepID: "s", Output: v}, now())
		require.NoError(t, err)
		require.NotEmpty(t, res.Deltas)
		for _, d := range res.Deltas {
			require.NoError(t, s.Apply(d))
			out = append(out, d)
		}
	}
	event("created", `{"blob_id": "`+id+`", "user_id": "u1", "content": {"title": "t", "items": [1, 2, 3], "deep": {"a": {"b": [{"c": 1}]}}}, "metadata": {"type": "doc"}}`)
	output(1, `{"delta_operations": [
		{"op": "add", "path": "/content/items/1", "value": {"inserted": [true, null]}},
		{"op": "remove", "path": "/content/items/0"},
		{"op": "replace", "path": "/content/deep/a/b/0/c", "value": 12345678901234567890},
		{"op": "add", "path": "/content/deep/a/new", "value": {"x": [1, {"y": "z"}]}},
		{"op": "add", "path": "/metadata/tags", "value": ["a", "b"]}]}`)
	output(2, `{"delta_operations": [
		{"op": "move", "from": "/content/deep/a/new", "path": "/content/moved"},
		{"op": "copy", "from": "/metadata/tags", "path": "/content/tags"},
		{"op": "remove", "path": "/metadata/tags/0"},
		{"op": "replace", "path": "/content/items", "value": []}],
		"created_blobs": [{"content": "child", "metadata": {"type": "part"}}]}`)
	event("updated", `{"blob_id": "`+id+`", "metadata": {"status": "review", "type": null}}`)
	output(3, `{"transformed_content": ["a", {"b": [1, 2]}]}`)
	event("deleted", `{"blob_id": "`+id+`"}`)
	return out
}

// document is what the diff compares of a blob at a version: content, metadata, deleted and
// derived, folded by the pure core (version 0: before the create).
func document(t *testing.T, deltas []events.Delta) []byte {
	t.Helper()
	s, err := blob.Fold(deltas)
	require.NoError(t, err)
	d := map[string]any{"content": json.RawMessage("null"), "metadata": json.RawMessage("{}"), "deleted": s.Deleted,
		"derived": append([]string{}, s.Derived...)}
	if len(s.Content) > 0 {
		d["content"] = s.Content
	}
	if len(s.Metadata) > 0 {
		d["metadata"] = s.Metadata
	}
	b, err := json.Marshal(d)
	require.NoError(t, err)
	return b
}

// testBlobDiff (of TestBlobEndpoints): GET /v1/blobs/{id}/diff is an RFC 6902 patch that,
// applied to the blob's document at version from (evanphx/json-patch), gives its document at
// version to, for every pair of versions of h (blob d1, diffHistory's), forwards and
// backwards; from defaults to to-1, to to the last version; bad versions are 400 and an
// unknown blob 404.
func testBlobDiff(t *testing.T, srv *httptest.Server, h []events.Delta) {
	last := int64(len(h))
	require.Equal(t, events.DeltaDelete, h[last-1].Type, "the last version is a delete")

	diff := func(query string) (int64, int64, jsonpatch.Patch, string) {
		t.Helper()
		r := do(t, srv, http.MethodGet, "/v1/blobs/d1/diff"+query, "")
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", query, r.Raw)
		var got struct {
			BlobID string          `json:"blob_id"`
			From   int64           `json:"from"`
			To     int64           `json:"to"`
			Patch  json.RawMessage `json:"patch"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.Raw), &got))
		require.Equal(t, "d1", got.BlobID)
		p, err := jsonpatch.DecodePatch(got.Patch)
		require.NoError(t, err, "%s: %s", query, got.Patch)
		return got.From, got.To, p, string(got.Patch)
	}
	for from := int64(0); from <= last; from++ {
		for to := int64(0); to <= last; to++ {
			q := fmt.Sprintf("?from=%d&to=%d", from, to)
			f, tt, p, raw := diff(q)
			require.Equal(t, [2]int64{from, to}, [2]int64{f, tt})
			got, err := p.Apply(document(t, h[:from]))
			require.NoError(t, err, "%s: %s", q, raw)
			require.JSONEq(t, string(document(t, h[:to])), string(got), "%s: %s", q, raw)
			if from == to {
				require.Equal(t, "[]", raw, "the same version: an empty patch")
			}
		}
	}

	f, to, _, raw := diff("")
	assert.Equal(t, [2]int64{last - 1, last}, [2]int64{f, to}, "the last change by default")
	assert.JSONEq(t, `[{"op": "replace", "path": "/deleted", "value": true}]`, raw, "a delete")
	f, to, _, _ = diff("?to=3")
	assert.Equal(t, [2]int64{2, 3}, [2]int64{f, to})
	f, to, _, raw = diff("?to=1")
	assert.Equal(t, [2]int64{0, 1}, [2]int64{f, to}, "the create: from before it")
	assert.JSONEq(t, `[{"op": "replace", "path": "/content", "value": {"deep": {"a": {"b": [{"c": 1}]}}, "items": [1, 2, 3], "title": "t"}},
		{"op": "add", "path": "/metadata/type", "value": "doc"}]`, raw)
	_, _, _, raw = diff("?from=3&to=4")
	assert.JSONEq(t, `[{"op": "replace", "path": "/content/deep/a/b/0/c", "value": 12345678901234567890}]`, raw)
	assert.Contains(t, raw, `12345678901234567890`, "numbers as written")

	for _, c := range []struct {
		query, status, code, message string
	}{
		{"?from=-1", "400", "bad_request", `from "-1": want a version from 0`},
		{"?to=x", "400", "bad_request", `to "x": want a version from 0`},
		{fmt.Sprintf("?to=%d", last+1), "400", "bad_request", fmt.Sprintf("to %d: blob d1 has versions 1 to %d", last+1, last)},
		{fmt.Sprintf("?from=%d", last+1), "400", "bad_request", fmt.Sprintf("from %d: blob d1 has versions 1 to %d", last+1, last)},
	} {
		r := do(t, srv, http.MethodGet, "/v1/blobs/d1/diff"+c.query, "")
		assert.Equal(t, c.status, fmt.Sprint(r.Status), "%s: %s", c.query, r.Raw)
		assert.Equal(t, c.code, r.errorCode(), "%s: %s", c.query, r.Raw)
		e, _ := r.Body["error"].(map[string]any)
		assert.Contains(t, e["message"], c.message, c.query)
	}
	r := do(t, srv, http.MethodGet, "/v1/blobs/nope/diff", "")
	assert.Equal(t, http.StatusNotFound, r.Status, r.Raw)
	assert.Equal(t, "not_found", r.errorCode())
	r = do(t, srv, http.MethodGet, "/v1/blobs/a.b/diff", "")
	assert.Equal(t, http.StatusBadRequest, r.Status, r.Raw)
}
