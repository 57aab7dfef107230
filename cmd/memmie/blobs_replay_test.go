package main

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

// TestDeltaStreamReplayEqualsLiveBlobs: blobs created (each summarized by blob-summary's
// workflow), updated, some deleted, one updated 150 times (past the projection's snapshot at
// version 100), all through a live serve. A second serve on a fresh database replays
// MEMMIE_DELTAS into its blobs projection from the first delta: every blob, at its last
// version, at every version and its delta history, is the same there as in the live one, and
// both are what folding the stream gives.
func TestDeltaStreamReplayEqualsLiveBlobs(t *testing.T) {
	const (
		user  = "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"
		n     = 12
		long  = "f0000000-0000-4000-8000-00000000ffff"
		longN = 150
	)
	natsURL, js := natsWithStreams(t)
	_, live := startBlobServe(t, natsURL, "--definitions", "../../definitions")

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("f0000000-0000-4000-8000-%012d", i)
		publishEvent(t, js, ids[i], "created", fmt.Sprintf(`{"blob_id": %q, "user_id": %q, "content": {"n": %d}, "metadata": {"type": "note"}}`,
			ids[i], user, i), ids[i]+"-c")
	}
	publishEvent(t, js, long, "created", `{"blob_id": "`+long+`", "user_id": "`+user+`", "content": 0}`, long+"-c")
	waitSettled(t, js)
	for i, id := range ids {
		publishEvent(t, js, id, "updated", fmt.Sprintf(`{"blob_id": %q, "content": {"n": %d, "edited": true}, "metadata": {"status": "final", "type": null}}`,
			id, i), id+"-u")
		if i%3 == 0 {
			publishEvent(t, js, id, "deleted", fmt.Sprintf(`{"blob_id": %q}`, id), id+"-d")
		}
	}
	for k := 1; k <= longN; k++ {
		publishEvent(t, js, long, "updated", fmt.Sprintf(`{"blob_id": %q, "content": %d, "metadata": {"k%d": %d}}`, long, k, k%7, k), fmt.Sprintf("%s-u%d", long, k))
	}
	waitSettled(t, js)

	all := append([]string{long}, ids...)
	history := map[string][]events.Delta{}
	for i, id := range all {
		d := streamDeltas(t, js, id)
		want := 1 + longN
		if id != long {
			want = 4
			if (i-1)%3 == 0 {
				want = 5
			}
		}
		require.Len(t, d, want, "blob %s: %s", id, deltaTypes(d))
		history[id] = d
	}

	_, replayed := startBlobServe(t, natsURL) // a fresh database; registers nothing
	for _, id := range all {
		d := history[id]
		last := int64(len(d))
		want := foldedJSON(t, d)
		assert.JSONEq(t, want, waitAPIBlob(t, live, id, last), "blob %s live", id)
		assert.JSONEq(t, want, waitAPIBlob(t, replayed, id, last), "blob %s replayed", id)
		for v := int64(1); v <= last; v++ {
			want := foldedJSON(t, d[:v])
			for name, api := range map[string]string{"live": live, "replayed": replayed} {
				status, body := apiBlob(t, api, id, v)
				require.Equal(t, http.StatusOK, status, "%s blob %s version %d: %s", name, id, v, body)
				assert.JSONEq(t, want, body, "%s blob %s version %d", name, id, v)
			}
		}
		liveDeltas, replayedDeltas := apiDeltas(t, live, id), apiDeltas(t, replayed, id)
		assert.Equal(t, liveDeltas, replayedDeltas, "blob %s: the delta histories", id)
		require.Len(t, liveDeltas, len(d))
		for i, x := range liveDeltas {
			assert.Equal(t, string(mustJSON(t, d[i])), string(mustJSON(t, x)), "blob %s delta %d", id, i+1)
		}
	}
}

// apiDeltas returns GET /v1/blobs/{id}/deltas, page after page.
func apiDeltas(t *testing.T, apiURL, id string) []events.Delta {
	t.Helper()
	var out []events.Delta
	for after := ""; ; {
		var page struct {
			Deltas []events.Delta `json:"deltas"`
			Next   string         `json:"next"`
		}
		getJSON(t, apiURL+"/v1/blobs/"+id+"/deltas?limit=100"+after, &page)
		out = append(out, page.Deltas...)
		if page.Next == "" {
			return out
		}
		after = "&after=" + page.Next
	}
}
