package blob_test

import (
	"encoding/json"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

func TestFoldAtEveryVersion(t *testing.T) {
	s, deltas := history(t, "b1",
		in{"created", chapter, "e1"},
		in{"updated", `{"blob_id": "b1", "metadata": {"status": "review"}}`, "e2"},
		in{"updated", `{"blob_id": "b1", "content": "It was a bright day."}`, "e3"},
		in{"deleted", `{"blob_id": "b1"}`, "e4"},
	)
	want := []struct {
		content, meta string
		deleted       bool
	}{
		{`"It was a dark night."`, `{"status":"draft","type":"chapter"}`, false},
		{`"It was a dark night."`, `{"status":"review","type":"chapter"}`, false},
		{`"It was a bright day."`, `{"status":"review","type":"chapter"}`, false},
		{`"It was a bright day."`, `{"status":"review","type":"chapter"}`, true},
	}
	for v := range want {
		at, err := blob.Fold(deltas[:v+1])
		require.NoError(t, err)
		assert.Equal(t, int64(v+1), at.Version)
		assert.Equal(t, want[v].content, string(at.Content), "version %d", v+1)
		assert.Equal(t, want[v].meta, string(at.Metadata), "version %d", v+1)
		assert.Equal(t, want[v].deleted, at.Deleted, "version %d", v+1)
	}
	folded, err := blob.Fold(deltas)
	require.NoError(t, err)
	assert.Equal(t, s, folded, "the writer's state is the fold of what it wrote")
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		_, ok := folded.SourceVersion(id)
		assert.True(t, ok, id)
	}
}

func TestApplyRefuses(t *testing.T) {
	_, deltas := history(t, "b1", in{"created", chapter, "e1"}, in{"updated", `{"blob_id": "b1", "content": 2}`, "e2"})
	create, update := deltas[0], deltas[1]
	with := func(d events.Delta, f func(*events.Delta)) events.Delta {
		f(&d)
		return d
	}
	created, err := blob.Fold(deltas[:1])
	require.NoError(t, err)
	deleted, err := blob.Fold(deltas)
	require.NoError(t, err)
	require.NoError(t, deleted.Apply(with(update, func(d *events.Delta) {
		d.Version, d.BaseVersion, d.Type, d.NewValue, d.OldValue = 3, 2, events.DeltaDelete, nil, nil
	})))

	tests := []struct {
		name string
		s    blob.State
		d    events.Delta
	}{
		{"a first delta that is not a create", blob.State{}, with(update, func(d *events.Delta) { d.Version, d.BaseVersion = 1, 0 })},
		{"a first delta at version 2", blob.State{}, with(create, func(d *events.Delta) { d.Version, d.BaseVersion = 2, 1 })},
		{"a gap", created, with(update, func(d *events.Delta) { d.Version = 3 })},
		{"the same version again", created, create},
		{"a second create", created, with(create, func(d *events.Delta) { d.Version, d.BaseVersion = 2, 1 })},
		{"base_version not below version", created, with(update, func(d *events.Delta) { d.BaseVersion = 2 })},
		{"another blob's delta", created, with(update, func(d *events.Delta) { d.BlobID = "b2" })},
		{"after a delete", deleted, with(update, func(d *events.Delta) { d.Version, d.BaseVersion = 4, 3 })},
		{"an unknown type", created, with(update, func(d *events.Delta) { d.Type = "rename" })},
		{"a create of no document", blob.State{}, with(create, func(d *events.Delta) { d.NewValue = json.RawMessage(`[1]`) })},
		{"metadata made a list", created, with(update, func(d *events.Delta) { d.NewValue = json.RawMessage(`{"metadata":[1]}`) })},
		{"a transform elsewhere", created, with(update, func(d *events.Delta) { d.Type, d.Path = events.DeltaTransform, "/metadata" })},
		{"an add of no value", created, with(update, func(d *events.Delta) { d.Type, d.Path, d.NewValue = events.DeltaAdd, "/metadata/x", nil })},
		{"an add outside the document", created, with(update, func(d *events.Delta) { d.Type, d.Path = events.DeltaAdd, "/owner" })},
		{"a remove of nothing", created, with(update, func(d *events.Delta) { d.Type, d.Path = events.DeltaRemove, "/metadata/nope" })},
		{"a replace of metadata by a string", created, with(update, func(d *events.Delta) {
			d.Type, d.Path, d.NewValue = events.DeltaReplace, "/metadata", json.RawMessage(`"x"`)
		})},
		{"a create_derived of no blob", created, with(update, func(d *events.Delta) { d.Type, d.NewValue = events.DeltaCreateDerived, json.RawMessage(`{}`) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.s.Clone()
			require.Error(t, tt.s.Apply(tt.d))
			assert.Equal(t, before, tt.s, "a refused delta changes nothing")
		})
	}
}

// TestFoldIsLinear folds 2k and 20k deltas of client updates and executions' operations: the
// bytes allocated per delta (a measure of the work that does not depend on the machine's
// speed) must not grow with the history, as they did when Apply copied the blob's records of
// event ids and executions on every delta.
func TestFoldIsLinear(t *testing.T) {
	perDelta := func(n int) float64 {
		deltas := longHistory(n)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := blob.Fold(deltas)
		runtime.ReadMemStats(&after)
		require.NoError(t, err)
		return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	}
	small, large := perDelta(2_000), perDelta(20_000)
	t.Logf("bytes allocated per delta: %.0f at 2k deltas, %.0f at 20k", small, large)
	assert.Less(t, large, 2*small, "bytes allocated per delta: %.0f at 2k deltas, %.0f at 20k", small, large)
}

// TestApplyLeavesCopiesAlone applies two different histories to copies of one state, as a
// writer that keeps its state while it tries an append does: each copy records only its own
// deltas, and the state copied from is still the fold of its deltas.
func TestApplyLeavesCopiesAlone(t *testing.T) {
	deltas := longHistory(300)
	base, err := blob.Fold(deltas[:200])
	require.NoError(t, err)
	kept := base // a copy by value, not a Clone
	ours, theirs := base, base
	for _, d := range deltas[200:] {
		require.NoError(t, ours.Apply(d))
	}
	out, err := blob.Deltas(theirs, blob.Execution{ExecutionID: "x-other", BlobID: "b1", BaseVersion: 200,
		Output: map[string]any{"created_blobs": []any{map[string]any{"content": 1}}}}, t0)
	require.NoError(t, err)
	for _, d := range out.Deltas {
		require.NoError(t, theirs.Apply(d))
	}

	folded, err := blob.Fold(deltas[:200])
	require.NoError(t, err)
	assert.Equal(t, folded, kept, "the state copied from is unchanged")
	assert.Empty(t, kept.Derived)
	assert.Equal(t, 1, theirs.Written("x-other"))
	assert.Equal(t, 0, ours.Written("x-other"))
	assert.Equal(t, 0, kept.Written("x-other"))
	for _, d := range deltas[200:] {
		if id := d.Metadata.SourceEventID; id != "" {
			v, ok := ours.SourceVersion(id)
			assert.True(t, ok)
			assert.Equal(t, d.Version, v)
			_, ok = kept.SourceVersion(id)
			assert.False(t, ok, "the copy does not see %s", id)
			_, ok = theirs.SourceVersion(id)
			assert.False(t, ok, "the other branch does not see %s", id)
		}
	}
	all, err := blob.Fold(deltas)
	require.NoError(t, err)
	assert.Equal(t, all, ours)
}
