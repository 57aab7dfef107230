package blob_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// outputOf decodes an execution output as the execution core holds it (plain JSON).
func outputOf(t *testing.T, s string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	return v
}

func execution(t *testing.T, output string) blob.Execution {
	return blob.Execution{ExecutionID: "x1", WorkflowID: "book_chapter_processing", WorkflowRevision: 3, ProviderID: "book-writer",
		BlobID: "b1", BaseVersion: 1, SourceEventID: "e1", Output: outputOf(t, output)}
}

func created(t *testing.T) blob.State {
	s, _ := history(t, "b1", in{"created", chapter, "e1"})
	return s
}

// TestDeltasOfTheDesignNotes follows the design notes' delta transformer: delta_operations
// one delta each, transformed_content a transform at /content, created_blobs a
// create_derived at /derived.
func TestDeltasOfTheDesignNotes(t *testing.T) {
	s := created(t)
	x := execution(t, `{
		"delta_operations": [
			{"op": "add", "path": "/metadata/summary", "value": "A <dark> night"},
			{"op": "test", "path": "/metadata/type", "value": "chapter"},
			{"op": "replace", "path": "/metadata/status", "value": "expanded"}
		],
		"transformed_content": {"text": "It was a dark and stormy night."},
		"created_blobs": [{"content": "Chapter 1, expanded", "metadata": {"type": "expanded_chapter", "original_id": "b1"}}],
		"other": "ignored"
	}`)
	res, err := blob.Deltas(s, x, t0)
	require.NoError(t, err)
	require.Len(t, res.Deltas, 4, "the test operation writes no delta")
	derived := blob.DerivedBlobID("x1", 0)
	want := []struct{ typ, path, newVal, oldVal string }{
		{events.DeltaAdd, "/metadata/summary", `"A <dark> night"`, ``},
		{events.DeltaReplace, "/metadata/status", `"expanded"`, `"draft"`},
		{events.DeltaTransform, "/content", `{"text":"It was a dark and stormy night."}`, `"It was a dark night."`},
		{events.DeltaCreateDerived, "/derived", `{"blob_id":"` + derived + `","content":"Chapter 1, expanded","metadata":{"original_id":"b1","type":"expanded_chapter"}}`, ``},
	}
	lineage := events.DeltaMetadata{WorkflowID: "book_chapter_processing", WorkflowRevision: 3, ExecutionID: "x1", SourceEventID: "e1"}
	for i, w := range want {
		d := res.Deltas[i]
		assert.Equal(t, blob.ExecutionDeltaID("x1", i), d.ID)
		assert.Equal(t, int64(i+2), d.Version, "versions follow the blob's")
		assert.Equal(t, int64(1), d.BaseVersion)
		assert.Equal(t, "book-writer", d.ProviderID)
		assert.Equal(t, lineage, d.Metadata)
		assert.Equal(t, w.typ, d.Type)
		assert.Equal(t, w.path, d.Path)
		assert.Equal(t, w.newVal, string(d.NewValue), "delta %d", i)
		assert.Equal(t, w.oldVal, string(d.OldValue), "delta %d", i)
		require.NoError(t, s.Apply(d))
	}
	assert.Equal(t, `{"text":"It was a dark and stormy night."}`, string(s.Content))
	assert.Equal(t, `{"status":"expanded","summary":"A <dark> night","type":"chapter"}`, string(s.Metadata))
	assert.Equal(t, []string{derived}, s.Derived)
	assert.Equal(t, 4, s.Written("x1"))

	// The derived blob's created event, as it is published and read back.
	require.Len(t, res.Created, 1)
	ce := res.Created[0]
	assert.Equal(t, "memmie.blobs."+derived+".created", ce.Subject)
	body, err := events.Marshal(ce)
	require.NoError(t, err)
	ev, err := blob.Parse(blob.Message{Subject: ce.Subject, Body: body})
	require.NoError(t, err)
	assert.Equal(t, ce.ID, ev.ID)
	assert.Equal(t, &events.Derivation{BlobID: "b1", ExecutionID: "x1", Depth: 1}, ev.Data.DerivedFrom)
	assert.Equal(t, "u1", ev.Data.UserID, "a derived blob is its parent's user's")
	dec, err := blob.Decide(blob.State{}, ev, t0)
	require.NoError(t, err)
	var child blob.State
	require.NoError(t, child.Apply(dec.Delta))
	assert.Equal(t, 1, child.Depth())
	assert.Equal(t, `"Chapter 1, expanded"`, string(child.Content))
	assert.Equal(t, "x1", dec.Delta.Metadata.ExecutionID)
	assert.Equal(t, ev.Data.DerivedFrom, child.DerivedFrom)

	// A grandchild is one derivation deeper.
	res, err = blob.Deltas(child, blob.Execution{ExecutionID: "x2", BlobID: derived, BaseVersion: 1,
		Output: outputOf(t, `{"created_blobs": [{"content": 1}, {"content": 2, "provider_ids": ["p"]}]}`)}, t0)
	require.NoError(t, err)
	require.Len(t, res.Created, 2)
	for i, ce := range res.Created {
		b := ce.Data.(*events.BlobEvent)
		assert.Equal(t, blob.DerivedBlobID("x2", i), b.BlobID)
		assert.Equal(t, 2, b.DerivedFrom.Depth)
		assert.Equal(t, derived, b.DerivedFrom.BlobID)
	}
	assert.Nil(t, res.Created[0].Data.(*events.BlobEvent).ProviderIDs)
	assert.Equal(t, []string{"p"}, res.Created[1].Data.(*events.BlobEvent).ProviderIDs)
}

// The examples' workflows, with the outputs their output_maps build.
func TestDeltasOfTheExampleWorkflows(t *testing.T) {
	t.Run("book_chapter_processing", func(t *testing.T) {
		s := created(t)
		res, err := blob.Deltas(s, execution(t, `{
			"created_blobs": [{"content": "expanded text", "metadata": {"type": "expanded_chapter", "original_id": "b1",
				"chapter_number": 3, "consistency_score": null, "word_count": 1200}}],
			"delta_operations": [{"op": "add", "path": "/metadata/status", "value": "expanded"}]}`), t0)
		require.NoError(t, err)
		require.Len(t, res.Deltas, 2)
		assert.Equal(t, events.DeltaAdd, res.Deltas[0].Type, "operations come first")
		assert.Equal(t, events.DeltaCreateDerived, res.Deltas[1].Type)
		require.Len(t, res.Created, 1)
		assert.JSONEq(t, `{"type": "expanded_chapter", "original_id": "b1", "chapter_number": 3, "consistency_score": null, "word_count": 1200}`,
			string(res.Created[0].Data.(*events.BlobEvent).Metadata))
	})
	t.Run("blob_summary", func(t *testing.T) {
		s := created(t)
		res, err := blob.Deltas(s, execution(t, `{"delta_operations": [
			{"op": "add", "path": "/metadata/summary", "value": "chapter blob b1 of user u1"},
			{"op": "add", "path": "/metadata/summarized_by", "value": "blob_summary (x1)"}]}`), t0)
		require.NoError(t, err)
		require.Len(t, res.Deltas, 2)
		for _, d := range res.Deltas {
			require.NoError(t, s.Apply(d))
		}
		assert.Equal(t, `{"status":"draft","summarized_by":"blob_summary (x1)","summary":"chapter blob b1 of user u1","type":"chapter"}`, string(s.Metadata))
		assert.Empty(t, res.Created)
	})
	t.Run("blob_processing_workflow without results", func(t *testing.T) {
		// Its output_map gives null when generate_deltas returned no lists.
		res, err := blob.Deltas(created(t), execution(t, `{"delta_operations": null, "created_blobs": null}`), t0)
		require.NoError(t, err)
		assert.Empty(t, res.Deltas)
	})
}

func TestDeltasOperations(t *testing.T) {
	base := `{"blob_id": "b1", "user_id": "u1", "content": {"title": "T", "tags": ["a", "b"]}, "metadata": {"type": "chapter"}}`
	tests := []struct {
		name    string
		ops     string
		content string // after, when the operations apply
		meta    string
		reject  string // the rejected item
	}{
		{name: "add to a list's end", ops: `[{"op": "add", "path": "/content/tags/-", "value": "c"}]`,
			content: `{"tags":["a","b","c"],"title":"T"}`, meta: `{"type":"chapter"}`},
		{name: "add into a list", ops: `[{"op": "add", "path": "/content/tags/0", "value": "z"}]`,
			content: `{"tags":["z","a","b"],"title":"T"}`, meta: `{"type":"chapter"}`},
		{name: "remove", ops: `[{"op": "remove", "path": "/content/tags/1"}]`,
			content: `{"tags":["a"],"title":"T"}`, meta: `{"type":"chapter"}`},
		{name: "move", ops: `[{"op": "move", "from": "/content/title", "path": "/metadata/title"}]`,
			content: `{"tags":["a","b"]}`, meta: `{"title":"T","type":"chapter"}`},
		{name: "copy", ops: `[{"op": "copy", "from": "/metadata/type", "path": "/metadata/kind"}]`,
			content: `{"tags":["a","b"],"title":"T"}`, meta: `{"kind":"chapter","type":"chapter"}`},
		{name: "replace the whole content", ops: `[{"op": "replace", "path": "/content", "value": [1, 2]}]`,
			content: `[1,2]`, meta: `{"type":"chapter"}`},
		{name: "remove the content", ops: `[{"op": "remove", "path": "/content"}]`, content: `null`, meta: `{"type":"chapter"}`},
		{name: "a pointer with escapes", ops: `[{"op": "add", "path": "/metadata/a~1b~0c", "value": 1}]`,
			content: `{"tags":["a","b"],"title":"T"}`, meta: `{"a/b~c":1,"type":"chapter"}`},
		{name: "a test that holds", ops: `[{"op": "test", "path": "/content/tags", "value": ["a", "b"]}, {"op": "remove", "path": "/content/title"}]`,
			content: `{"tags":["a","b"]}`, meta: `{"type":"chapter"}`},
		{name: "a test that fails stops them all", reject: "delta_operations[1]",
			ops: `[{"op": "add", "path": "/metadata/x", "value": 1}, {"op": "test", "path": "/metadata/type", "value": "outline"}, {"op": "add", "path": "/metadata/y", "value": 2}]`},
		{name: "a path that does not exist", reject: "delta_operations[1]",
			ops: `[{"op": "add", "path": "/metadata/x", "value": 1}, {"op": "replace", "path": "/metadata/nope", "value": 2}]`},
		{name: "an add below nothing", reject: "delta_operations[0]", ops: `[{"op": "add", "path": "/metadata/a/b", "value": 1}]`},
		{name: "a negative index", reject: "delta_operations[0]", ops: `[{"op": "remove", "path": "/content/tags/-1"}]`},
		{name: "an index past the end", reject: "delta_operations[0]", ops: `[{"op": "add", "path": "/content/tags/5", "value": 1}]`},
		{name: "metadata replaced by a list", reject: "delta_operations[0]", ops: `[{"op": "replace", "path": "/metadata", "value": []}]`},
		{name: "metadata removed", reject: "delta_operations[0]", ops: `[{"op": "remove", "path": "/metadata"}]`},
		{name: "metadata made null", reject: "delta_operations[0]", ops: `[{"op": "replace", "path": "/metadata", "value": null}]`},
		{name: "a move from nothing", reject: "delta_operations[0]", ops: `[{"op": "move", "from": "/content/nope", "path": "/content/x"}]`},
		{name: "an unknown op", reject: "output", ops: `[{"op": "rename", "path": "/content"}]`},
		{name: "no op", reject: "output", ops: `[{"path": "/content"}]`},
		{name: "a path outside the document", reject: "output", ops: `[{"op": "add", "path": "/owner", "value": 1}]`},
		{name: "the root", reject: "output", ops: `[{"op": "replace", "path": "", "value": {}}]`},
		{name: "a from outside the document", reject: "output", ops: `[{"op": "copy", "from": "/owner", "path": "/content"}]`},
		{name: "an add without a value", reject: "output", ops: `[{"op": "add", "path": "/content/x"}]`},
		{name: "not an operation", reject: "output", ops: `["add /content"]`},
		{name: "not a list", reject: "output", ops: `{"op": "add"}`},
		{name: "an empty key", reject: "output", ops: `[{"op": "add", "path": "/metadata/", "value": 1}]`},
		{name: "an empty key inside", reject: "output", ops: `[{"op": "copy", "from": "/content//x", "path": "/metadata/x"}]`},
		{name: "member names are exact", reject: "output", ops: `[{"op": "add", "Path": "/metadata/x", "value": 1}]`},
		{name: "a move into itself", reject: "output", ops: `[{"op": "move", "from": "/content", "path": "/content/tags"}]`},
		{name: "a move to where it is", ops: `[{"op": "move", "from": "/content/title", "path": "/content/title"}]`,
			content: `{"tags":["a","b"],"title":"T"}`, meta: `{"type":"chapter"}`},
		{name: "a move to where nothing is", reject: "delta_operations[0]", ops: `[{"op": "move", "from": "/content/nope", "path": "/content/nope"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := history(t, "b1", in{"created", base, "e1"})
			res, err := blob.Deltas(s, execution(t, `{"delta_operations": `+tt.ops+`, "created_blobs": [{"content": 1}]}`), t0)
			if tt.reject != "" {
				var rej *blob.Rejection
				require.ErrorAs(t, err, &rej)
				assert.Equal(t, tt.reject, rej.Item, rej.Error())
				assert.Equal(t, "x1", rej.ExecutionID)
				assert.Empty(t, res.Deltas, "nothing of a rejected output is written")
				assert.Empty(t, res.Created)
				return
			}
			require.NoError(t, err)
			for _, d := range res.Deltas {
				require.NoError(t, s.Apply(d))
			}
			assert.Equal(t, tt.content, string(s.Content))
			assert.Equal(t, tt.meta, string(s.Metadata))
			// Fold replays the operations to the same blob.
			_, deltas := history(t, "b1", in{"created", base, "e1"})
			folded, err := blob.Fold(append(deltas, res.Deltas...))
			require.NoError(t, err)
			assert.Equal(t, s, folded)
		})
	}
}

func TestDeltasOnANewerVersion(t *testing.T) {
	// The execution read version 1; two updates came since. Its operations apply to version 3
	// and take version 4, recording the version it read.
	s, _ := history(t, "b1", in{"created", chapter, "e1"},
		in{"updated", `{"blob_id": "b1", "metadata": {"status": "review"}}`, "e2"},
		in{"updated", `{"blob_id": "b1", "content": "new"}`, "e3"})
	res, err := blob.Deltas(s, execution(t, `{"delta_operations": [{"op": "add", "path": "/metadata/summary", "value": "s"}]}`), t0)
	require.NoError(t, err)
	require.Len(t, res.Deltas, 1)
	assert.Equal(t, int64(4), res.Deltas[0].Version)
	assert.Equal(t, int64(1), res.Deltas[0].BaseVersion)

	// A test makes an operation depend on what was read: it no longer holds.
	_, err = blob.Deltas(s, execution(t, `{"delta_operations": [{"op": "test", "path": "/metadata/status", "value": "draft"},
		{"op": "add", "path": "/metadata/summary", "value": "s"}]}`), t0)
	var rej *blob.Rejection
	require.ErrorAs(t, err, &rej)
	assert.Equal(t, "delta_operations[0]", rej.Item)

	// A transform replaces the content of the current version.
	res, err = blob.Deltas(s, execution(t, `{"transformed_content": "newer"}`), t0)
	require.NoError(t, err)
	assert.Equal(t, `"new"`, string(res.Deltas[0].OldValue))

	// A base version the blob never had is the caller's bug.
	x := execution(t, `{"transformed_content": "x"}`)
	x.BaseVersion = 9
	_, err = blob.Deltas(s, x, t0)
	require.Error(t, err)
	assert.NotErrorAs(t, err, &rej)
}

func TestDeltasOfNoBlob(t *testing.T) {
	out := `{"transformed_content": "x"}`
	var rej *blob.Rejection
	_, err := blob.Deltas(blob.State{}, execution(t, out), t0)
	require.ErrorAs(t, err, &rej)
	assert.Equal(t, "blob", rej.Item)

	s, _ := history(t, "b1", in{"created", chapter, "e1"}, in{"deleted", `{"blob_id": "b1"}`, "e2"})
	_, err = blob.Deltas(s, execution(t, out), t0)
	require.ErrorAs(t, err, &rej)
	assert.Equal(t, "blob", rej.Item)

	// An output with nothing for the blob writes nothing, whatever the blob.
	for _, out := range []string{`{}`, `null`, `"text"`, `[1]`, `{"transformed_content": null, "result": 1}`} {
		res, err := blob.Deltas(s, execution(t, out), t0)
		require.NoError(t, err, out)
		assert.Empty(t, res.Deltas, out)
	}
	_, err = blob.Deltas(created(t), blob.Execution{ExecutionID: "", BlobID: "b1", Output: map[string]any{}}, t0)
	require.Error(t, err, "an execution needs an id")
}

// TestDeltasResume is a writer that crashed after two of an execution's four deltas: the
// execution delivered again writes only the other two, with the ids and versions they would
// have had; delivered once more, it writes nothing.
func TestDeltasResume(t *testing.T) {
	out := `{"delta_operations": [{"op": "add", "path": "/metadata/tags", "value": []},
		{"op": "add", "path": "/metadata/tags/-", "value": "x"}, {"op": "test", "path": "/metadata/tags/0", "value": "x"},
		{"op": "add", "path": "/metadata/tags/-", "value": "y"}], "created_blobs": [{"content": 1}]}`
	s := created(t)
	all, err := blob.Deltas(s, execution(t, out), t0)
	require.NoError(t, err)
	require.Len(t, all.Deltas, 4)

	for cut := 0; cut <= 4; cut++ {
		part := s.Clone()
		for _, d := range all.Deltas[:cut] {
			require.NoError(t, part.Apply(d))
		}
		res, err := blob.Deltas(part, execution(t, out), t0)
		require.NoError(t, err, "cut at %d", cut)
		assert.Equal(t, cut, res.Written)
		require.Len(t, res.Deltas, 4-cut)
		for i, d := range res.Deltas {
			assert.Equal(t, all.Deltas[cut+i], d, "cut at %d", cut)
		}
		assert.Equal(t, all.Created, res.Created, "the created events are published again: duplicates")
	}
	done := s.Clone()
	for _, d := range all.Deltas {
		require.NoError(t, done.Apply(d))
	}
	assert.Equal(t, `{"status":"draft","tags":["x","y"],"type":"chapter"}`, string(done.Metadata))

	// The created event of a derived blob that already exists is a duplicate.
	body, err := events.Marshal(all.Created[0])
	require.NoError(t, err)
	ev, err := blob.Parse(blob.Message{Subject: all.Created[0].Subject, Body: body})
	require.NoError(t, err)
	dec, err := blob.Decide(blob.State{}, ev, t0)
	require.NoError(t, err)
	var child blob.State
	require.NoError(t, child.Apply(dec.Delta))
	dec, err = blob.Decide(child, ev, t0)
	require.NoError(t, err)
	assert.True(t, dec.Duplicate)
}

func TestCreatedBlobsShape(t *testing.T) {
	for _, out := range []string{
		`{"created_blobs": [1]}`,
		`{"created_blobs": [{"content": 1, "parent": "b0"}]}`,
		`{"created_blobs": [{"content": 1, "metadata": "chapter"}]}`,
		`{"created_blobs": [{"content": 1, "provider_ids": [""]}]}`,
		`{"created_blobs": {"content": 1}}`,
	} {
		_, err := blob.Deltas(created(t), execution(t, out), t0)
		var rej *blob.Rejection
		require.ErrorAs(t, err, &rej, out)
		assert.Equal(t, "output", rej.Item, out)
	}
}

func TestDeltasTooLarge(t *testing.T) {
	big := strings.Repeat("a", events.MaxEventSize-100)
	for _, out := range []map[string]any{
		{"transformed_content": big},
		{"delta_operations": []any{map[string]any{"op": "add", "path": "/metadata/x", "value": big}}},
		{"created_blobs": []any{map[string]any{"content": big}}},
	} {
		_, err := blob.Deltas(created(t), blob.Execution{ExecutionID: "x1", BlobID: "b1", BaseVersion: 1, Output: out}, t0)
		var rej *blob.Rejection
		require.ErrorAs(t, err, &rej)
		assert.Contains(t, rej.Reason, "exceed the limit")
	}
}
