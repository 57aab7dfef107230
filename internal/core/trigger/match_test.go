package trigger_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// providers are the shipped ones: book-writer (chapter and outline workflows) and
// blob-summary (every typed blob but expanded chapters and outlines).
func providers(t *testing.T) []*definitions.Provider {
	t.Helper()
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	require.Len(t, set.Providers, 2)
	return set.Providers
}

// apply parses and decides each event in turn and returns the last event and the state after
// it, as the writer hands them to Match.
func apply(t *testing.T, blobID string, evs ...[2]string) (blob.Event, blob.State) {
	t.Helper()
	var s blob.State
	var ev blob.Event
	for i, e := range evs {
		var err error
		ev, err = blob.Parse(blob.Message{Subject: "memmie.blobs." + blobID + "." + e[0], Body: []byte(e[1]), MsgID: "e" + string(rune('1'+i))})
		require.NoError(t, err)
		dec, err := blob.Decide(s, ev, t0)
		require.NoError(t, err)
		require.NoError(t, s.Apply(dec.Delta))
	}
	return ev, s
}

type want struct {
	provider, workflow string
	priority           int
	trigger            string
}

func started(starts []trigger.Start) []want {
	var out []want
	for _, s := range starts {
		out = append(out, want{s.ProviderID, s.WorkflowID, s.Priority, s.Trigger})
	}
	return out
}

const createdChapter = `{"blob_id": "b1", "user_id": "u1", "content": "It was a dark night.", "metadata": {"type": "chapter", "status": "draft"}}`

func TestMatchBookWriter(t *testing.T) {
	chapterFlow := want{"book-writer", "book_chapter_processing", 10, "workflows[0].triggers[0]"}
	chapterUpdate := want{"book-writer", "book_chapter_processing", 10, "workflows[0].triggers[1]"}
	outlineFlow := want{"book-writer", "book_outline_generation", 5, "workflows[1].triggers[0]"}
	summary := want{"blob-summary", "blob_summary", 0, "workflows[0].triggers[0]"}
	created := func(body string) [2]string { return [2]string{"created", body} }
	tests := []struct {
		name   string
		events [][2]string
		want   []want
	}{
		{"a chapter created", [][2]string{created(createdChapter)}, []want{chapterFlow, summary}},
		{"a chapter for book-writer only", [][2]string{created(`{"blob_id": "b1", "provider_ids": ["book-writer"], "metadata": {"type": "chapter"}}`)},
			[]want{chapterFlow}},
		{"a chapter for blob-summary only", [][2]string{created(`{"blob_id": "b1", "provider_ids": ["blob-summary", "nobody"], "metadata": {"type": "chapter"}}`)},
			[]want{summary}},
		{"a chapter for no provider", [][2]string{created(`{"blob_id": "b1", "provider_ids": [], "metadata": {"type": "chapter"}}`)}, nil},
		{"an outline request", [][2]string{created(`{"blob_id": "b1", "metadata": {"type": "outline_request"}}`)}, []want{outlineFlow, summary}},
		{"an outline", [][2]string{created(`{"blob_id": "b1", "metadata": {"type": "outline"}}`)}, nil},
		{"a blob with no type", [][2]string{created(`{"blob_id": "b1", "content": "x"}`)}, nil},
		{"a note", [][2]string{created(`{"blob_id": "b1", "metadata": {"type": "note"}}`)}, []want{summary}},
		{"a note for book-writer", [][2]string{created(`{"blob_id": "b1", "provider_ids": ["book-writer"], "metadata": {"type": "note"}}`)}, nil},
		// The update names only the status: metadata.type is the blob's.
		{"a chapter set back to draft", [][2]string{created(createdChapter),
			{"updated", `{"blob_id": "b1", "metadata": {"status": "final"}}`}, {"updated", `{"blob_id": "b1", "metadata": {"status": "draft"}}`}},
			[]want{chapterUpdate}},
		{"a draft chapter's content updated", [][2]string{created(createdChapter), {"updated", `{"blob_id": "b1", "content": "new"}`}},
			[]want{chapterUpdate}},
		{"a chapter made final", [][2]string{created(createdChapter), {"updated", `{"blob_id": "b1", "metadata": {"status": "final"}}`}}, nil},
		{"a draft outline updated", [][2]string{created(`{"blob_id": "b1", "metadata": {"type": "outline_request"}}`),
			{"updated", `{"blob_id": "b1", "metadata": {"status": "draft"}}`}}, nil},
		{"a chapter deleted", [][2]string{created(createdChapter), {"deleted", `{"blob_id": "b1"}`}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, s := apply(t, "b1", tt.events...)
			starts, err := trigger.Match(providers(t), ev, s, trigger.Config{})
			require.NoError(t, err)
			assert.Equal(t, tt.want, started(starts))
			for _, st := range starts {
				assert.Equal(t, trigger.ExecutionID("b1", ev.ID, st.ProviderID, st.WorkflowID), st.ExecutionID)
				assert.Equal(t, "b1", st.BlobID)
				assert.Equal(t, s.Version, st.BaseVersion)
				assert.Equal(t, ev.ID, st.SourceEventID)
			}
		})
	}
}

func TestMatchInput(t *testing.T) {
	ev, s := apply(t, "b1", [2]string{"created", createdChapter},
		[2]string{"updated", `{"blob_id": "b1", "user_id": "u2", "metadata": {"status": "draft", "words": 12}}`})
	starts, err := trigger.Match(providers(t), ev, s, trigger.Config{})
	require.NoError(t, err)
	require.Len(t, starts, 1)
	// The event data, without provider_ids (absent), plus the blob after the event.
	assert.Equal(t, map[string]any{
		"blob_id": "b1", "user_id": "u2", "metadata": map[string]any{"status": "draft", "words": 12.0},
		"blob": map[string]any{"blob_id": "b1", "user_id": "u1", "version": 2.0, "content": "It was a dark night.",
			"metadata": map[string]any{"status": "draft", "type": "chapter", "words": 12.0}, "deleted": false},
	}, starts[0].Input)
	assert.Equal(t, int64(2), starts[0].BaseVersion)

	// The input validates against the shipped input schema.
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	schema := set.Schema("blob_input_schema_v1")
	require.NotNil(t, schema)
	ev, s = apply(t, "3f1c1a52-8a5e-4f43-9d7e-0cf1f7a8f9a1", [2]string{"created",
		`{"blob_id": "3f1c1a52-8a5e-4f43-9d7e-0cf1f7a8f9a1", "user_id": "7d3b0b0e-5b7e-4b55-8a57-1b0c6f1d2e3f", "metadata": {"type": "chapter"}}`})
	starts, err = trigger.Match(set.Providers, ev, s, trigger.Config{})
	require.NoError(t, err)
	require.NotEmpty(t, starts)
	for _, st := range starts {
		require.NoError(t, schema.Compiled.Validate(st.Input), st.WorkflowID)
	}
	// Each start has an input of its own.
	starts[0].Input["blob_id"] = "changed"
	assert.Equal(t, ev.Data.BlobID, starts[1].Input["blob_id"])
}

func TestMatchIsDeterministic(t *testing.T) {
	ev, s := apply(t, "b1", [2]string{"created", createdChapter})
	ps := providers(t)
	first, err := trigger.Match(ps, ev, s, trigger.Config{})
	require.NoError(t, err)
	again, err := trigger.Match(reversed(ps), ev, s, trigger.Config{})
	require.NoError(t, err)
	assert.Equal(t, first, again, "the order of providers changes nothing")

	// The id names the event, the blob, the provider and the workflow.
	id := trigger.ExecutionID("b1", "e1", "book-writer", "book_chapter_processing")
	for _, other := range []string{
		trigger.ExecutionID("b1", "e2", "book-writer", "book_chapter_processing"),
		trigger.ExecutionID("b2", "e1", "book-writer", "book_chapter_processing"),
		trigger.ExecutionID("b1", "e1", "blob-summary", "book_chapter_processing"),
		trigger.ExecutionID("b1", "e1", "book-writer", "book_outline_generation"),
	} {
		assert.NotEqual(t, id, other)
	}
	assert.Equal(t, id, first[0].ExecutionID)

	// A provider registered twice would start an execution twice.
	_, err = trigger.Match(append(ps, ps[0]), ev, s, trigger.Config{})
	require.Error(t, err)
}

func reversed(ps []*definitions.Provider) []*definitions.Provider {
	out := slices.Clone(ps)
	slices.Reverse(out)
	return out
}

// TestMatchDerivationBound follows a chain of derived blobs: each is created by an execution
// of the one before, one derivation deeper. Up to the bound they trigger; the first past it is
// recorded (its create delta) and starts nothing, which ends the chain.
func TestMatchDerivationBound(t *testing.T) {
	// A provider that derives a blob from every blob it is given.
	loop, err := definitions.ParseProvider("loop.yaml", []byte(`
provider: {id: loop}
workflows:
  - workflow_id: derive
    triggers: [{event: onCreate}]
`))
	require.NoError(t, err)
	ps := []*definitions.Provider{loop}

	for _, tt := range []struct {
		cfg      trigger.Config
		deepest  int // the deepest blob that still triggers
		wantErr  bool
		maxDepth int
	}{
		{cfg: trigger.Config{}, deepest: trigger.DefaultMaxDerivationDepth},
		{cfg: trigger.Config{MaxDerivationDepth: 1}, deepest: 1},
		{cfg: trigger.Config{MaxDerivationDepth: 5}, deepest: 5},
		{cfg: trigger.Config{MaxDerivationDepth: -1}, wantErr: true},
	} {
		ev, s := apply(t, "b0", [2]string{"created", `{"blob_id": "b0", "user_id": "u1", "content": 0}`})
		depth := 0
		for {
			starts, err := trigger.Match(ps, ev, s, tt.cfg)
			if tt.wantErr {
				require.Error(t, err)
				break
			}
			require.NoError(t, err)
			assert.Equal(t, depth > tt.deepest, tt.cfg.PastBound(ev), "depth %d", depth)
			if len(starts) == 0 {
				break
			}
			require.Len(t, starts, 1)
			// The execution derives a blob; its created event is recorded like a client's.
			res, err := blob.Deltas(s, blob.Execution{ExecutionID: starts[0].ExecutionID, BlobID: s.BlobID,
				BaseVersion: starts[0].BaseVersion, Output: map[string]any{"created_blobs": []any{map[string]any{"content": depth + 1}}}}, t0)
			require.NoError(t, err)
			require.Len(t, res.Created, 1)
			body, err := events.Marshal(res.Created[0])
			require.NoError(t, err)
			ev, err = blob.Parse(blob.Message{Subject: res.Created[0].Subject, Body: body})
			require.NoError(t, err)
			dec, err := blob.Decide(blob.State{}, ev, t0)
			require.NoError(t, err)
			s = blob.State{}
			require.NoError(t, s.Apply(dec.Delta))
			depth++
			require.Equal(t, depth, s.Depth())
			require.LessOrEqual(t, depth, 10, "the chain must end")
		}
		if !tt.wantErr {
			assert.Equal(t, tt.deepest+1, depth, "the blob past the bound exists and started nothing")
		}
	}
}

func TestMatchRefuses(t *testing.T) {
	ev, s := apply(t, "b1", [2]string{"created", createdChapter})
	_, err := trigger.Match(providers(t), ev, blob.State{}, trigger.Config{})
	require.Error(t, err, "a blob that does not exist")
	other, _ := apply(t, "b2", [2]string{"created", `{"blob_id": "b2"}`})
	_, err = trigger.Match(providers(t), other, s, trigger.Config{})
	require.Error(t, err, "the state of another blob")
}
