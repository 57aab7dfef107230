package blob_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the scenario")

// golden is a recorded delta stream of one blob, one envelope a line, as memmie stores it,
// followed by the blob's state at each version.
const goldenDeltas, goldenStates = "testdata/golden/chapter.deltas.jsonl", "testdata/golden/chapter.states.json"

// chapterScenario writes the golden blob's history: a client's chapter, an update, an
// execution's operations, transform and derived blob, a content update, a delete.
func chapterScenario(t *testing.T) []events.Delta {
	t.Helper()
	var s blob.State
	var out []events.Delta
	now := t0
	event := func(kind, body, id string) {
		ev, err := blob.Parse(blob.Message{Subject: subject("b1", kind), Body: []byte(body), MsgID: id})
		require.NoError(t, err)
		dec, err := blob.Decide(s, ev, now)
		require.NoError(t, err)
		require.NoError(t, s.Apply(dec.Delta))
		out = append(out, dec.Delta)
		now = now.Add(time.Minute)
	}
	event("created", chapter, "e1")
	event("updated", `{"blob_id": "b1", "user_id": "u2", "metadata": {"chapter_number": 3, "status": null, "tags": ["<draft>"]}}`, "e2")
	res, err := blob.Deltas(s, blob.Execution{ExecutionID: "x1", WorkflowID: "book_chapter_processing", WorkflowRevision: 2,
		ProviderID: "book-writer", BlobID: "b1", BaseVersion: 1, SourceEventID: "e1", StepID: "build_result",
		Output: outputOf(t, `{"delta_operations": [{"op": "test", "path": "/metadata/type", "value": "chapter"},
			{"op": "add", "path": "/metadata/tags/-", "value": "expanded"}, {"op": "copy", "from": "/metadata/chapter_number", "path": "/metadata/number"},
			{"op": "remove", "path": "/metadata/chapter_number"}, {"op": "move", "from": "/metadata/number", "path": "/metadata/chapter"},
			{"op": "replace", "path": "/metadata/type", "value": "expanded_chapter"}],
			"transformed_content": {"text": "It was a dark and stormy night.", "words": 7},
			"created_blobs": [{"content": "Notes", "metadata": {"type": "notes"}}]}`)}, now)
	require.NoError(t, err)
	for _, d := range res.Deltas {
		require.NoError(t, s.Apply(d))
		out = append(out, d)
	}
	now = now.Add(time.Minute)
	event("updated", `{"blob_id": "b1", "content": {"text": "Rewritten & shorter."}}`, "e3")
	event("deleted", `{"blob_id": "b1", "user_id": "u1"}`, "e4")
	return out
}

// TestGoldenDeltas replays the recorded delta stream: each stored delta still decodes and
// folds to the recorded states (an Apply that changes breaks stored blobs), and the scenario
// still writes exactly those deltas (a Decide or Deltas that changes writes, after an upgrade,
// other deltas for an execution cut short before it).
func TestGoldenDeltas(t *testing.T) {
	deltas := chapterScenario(t)
	var lines bytes.Buffer
	var states []blob.State
	var s blob.State
	for _, d := range deltas {
		b, err := events.Marshal(blob.DeltaEvent(d))
		require.NoError(t, err)
		lines.Write(b)
		lines.WriteByte('\n')
		require.NoError(t, s.Apply(d))
		states = append(states, s)
	}
	statesJSON, err := json.MarshalIndent(states, "", "  ")
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(goldenDeltas), 0o755))
		require.NoError(t, os.WriteFile(goldenDeltas, lines.Bytes(), 0o644))
		require.NoError(t, os.WriteFile(goldenStates, append(statesJSON, '\n'), 0o644))
	}

	recorded, err := os.ReadFile(goldenDeltas)
	require.NoError(t, err)
	require.Equal(t, string(recorded), lines.String(), "the scenario writes other deltas than were recorded")
	var replayed []events.Delta
	for _, line := range bytes.Split(bytes.TrimSpace(recorded), []byte("\n")) {
		ev, err := events.Decode(line)
		require.NoError(t, err)
		replayed = append(replayed, *ev.Data.(*events.Delta))
	}
	var got []blob.State
	for v := range replayed {
		at, err := blob.Fold(replayed[:v+1])
		require.NoError(t, err)
		got = append(got, at)
	}
	gotJSON, err := json.MarshalIndent(got, "", "  ")
	require.NoError(t, err)
	want, err := os.ReadFile(goldenStates)
	require.NoError(t, err)
	require.Equal(t, string(bytes.TrimSpace(want)), string(gotJSON))
}
