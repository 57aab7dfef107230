package blob_test

import (
	"encoding/json"
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
