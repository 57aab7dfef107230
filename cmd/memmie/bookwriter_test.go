package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
)

// TestBookWriterProvider runs the shipped definitions with the book-writer's services given
// (httptest "core" and "studio"): a chapter created starts the chapter workflow (and
// blob-summary's), an outline request the outline workflow, events that match no trigger start
// nothing, provider_ids limits the providers considered, and a draft chapter updated starts the
// chapter workflow again; each workflow's calls are exactly those below.
func TestBookWriterProvider(t *testing.T) {
	const (
		user     = "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"
		chapter  = "c0000000-0000-4000-8000-000000000001"
		outline  = "c0000000-0000-4000-8000-000000000002"
		filtered = "c0000000-0000-4000-8000-000000000003" // a chapter for blob-summary only
		noneAsk  = "c0000000-0000-4000-8000-000000000004" // a chapter with provider_ids []
		noMatch  = "c0000000-0000-4000-8000-000000000005" // a type no trigger wants
	)
	core := newRecorder(t, func(r request) (int, any) {
		prompt, _ := r.Body.(map[string]any)["prompt"].(string)
		if strings.Contains(prompt, "outline") {
			return 200, map[string]any{"text": "1. The night. 2. The day."}
		}
		return 200, map[string]any{"text": "It was a long, dark night.", "word_count": 6}
	})
	studio := newRecorder(t, func(r request) (int, any) {
		if r.Path == "/consistency/check" {
			return 200, map[string]any{"score": 0.9}
		}
		return 404, map[string]any{"error": "no route " + r.Path}
	})
	natsURL, js := natsWithStreams(t)
	_, apiURL := startBlobServe(t, natsURL, "--definitions", "../../definitions",
		"--services", servicesFile(t, map[string]string{"core": core.URL, "studio": studio.URL}))

	publishEvent(t, js, chapter, "created", `{"user_id": "`+user+`", "blob_id": "`+chapter+`", "content": "It was night.",
		"metadata": {"type": "chapter", "status": "draft", "chapter_number": 3}}`, "chapter-created")
	publishEvent(t, js, outline, "created", `{"user_id": "`+user+`", "blob_id": "`+outline+`", "provider_ids": ["book-writer"],
		"content": "A book about the night.", "metadata": {"type": "outline_request"}}`, "outline-created")
	publishEvent(t, js, filtered, "created", `{"user_id": "`+user+`", "blob_id": "`+filtered+`", "provider_ids": ["blob-summary"],
		"content": "Another night.", "metadata": {"type": "chapter"}}`, "filtered-created")
	publishEvent(t, js, noneAsk, "created", `{"user_id": "`+user+`", "blob_id": "`+noneAsk+`", "provider_ids": [],
		"content": "No one asked.", "metadata": {"type": "chapter"}}`, "none-created")
	publishEvent(t, js, noMatch, "created", `{"user_id": "`+user+`", "blob_id": "`+noMatch+`",
		"content": "Already expanded.", "metadata": {"type": "expanded_chapter"}}`, "nomatch-created")
	waitSettled(t, js)
	// An update that leaves the chapter final matches no trigger; one back to draft matches
	// book-writer's onUpdate trigger.
	publishEvent(t, js, chapter, "updated", `{"blob_id": "`+chapter+`", "metadata": {"status": "final"}}`, "chapter-final")
	publishEvent(t, js, chapter, "updated", `{"blob_id": "`+chapter+`", "content": "It was a night.", "metadata": {"status": "draft"}}`,
		"chapter-redraft")
	waitSettled(t, js)

	queued := queuedExecutions(t, js)
	for blobID, want := range map[string][]string{
		chapter:  {"blob_summary", "book_chapter_processing", "book_chapter_processing"},
		outline:  {"book_outline_generation"},
		filtered: {"blob_summary"},
		noneAsk:  nil,
		noMatch:  nil,
	} {
		assert.Equal(t, want, workflowsOf(queued, blobID), "the workflows blob %s started", blobID)
	}
	chapterRun := trigger.ExecutionID(chapter, "chapter-created", "book-writer", "book_chapter_processing")
	redraftRun := trigger.ExecutionID(chapter, "chapter-redraft", "book-writer", "book_chapter_processing")
	outlineRun := trigger.ExecutionID(outline, "outline-created", "book-writer", "book_outline_generation")
	require.Contains(t, queued, chapterRun)
	require.Contains(t, queued, redraftRun)
	require.Contains(t, queued, outlineRun)
	assert.Equal(t, "workflows[0].triggers[0]", queued[chapterRun].Trigger)
	assert.Equal(t, "workflows[0].triggers[1]", queued[redraftRun].Trigger)
	assert.Equal(t, 10, queued[chapterRun].Priority)
	assert.Equal(t, 5, queued[outlineRun].Priority)
	assert.Len(t, queued, 5, "and nothing for the derived blobs (expanded_chapter, outline)")
	ended := endedExecutions(t, js)
	for id, q := range queued {
		assert.Equal(t, []events.Type{events.TypeExecutionCompleted}, ended[id], "%s of %s", id, q.WorkflowID)
	}

	prompt := func(content string) string {
		return "Expand the following chapter content with more descriptive details,\ncharacter development, and sensory descriptions while maintaining\nthe author's voice and style:\n\n" + content + "\n"
	}
	post := func(path string, body map[string]any) request {
		return request{Method: http.MethodPost, Path: path, Body: body}
	}
	strip := func(rs []request) []request {
		for i := range rs {
			rs[i].ExecutionID, rs[i].StepID = "", ""
		}
		return rs
	}
	coreCalls, studioCalls := core.byExecution(), studio.byExecution()
	assert.Len(t, coreCalls, 3, "core: the two chapter runs and the outline run")
	assert.Equal(t, []request{post("/generate", map[string]any{"prompt": prompt("It was night."), "temperature": 0.7, "max_tokens": 3000.0})},
		strip(coreCalls[chapterRun]))
	assert.Equal(t, []request{post("/generate", map[string]any{"prompt": prompt("It was a night."), "temperature": 0.7, "max_tokens": 3000.0})},
		strip(coreCalls[redraftRun]))
	assert.Equal(t, []request{post("/generate", map[string]any{"prompt": "Write a chapter-by-chapter outline for the book described below.\n" +
		"Give each chapter a title and a two-sentence summary.\n\nA book about the night.\n", "max_tokens": 2000.0})},
		strip(coreCalls[outlineRun]))
	assert.Len(t, studioCalls, 2, "studio: the two chapter runs")
	for _, run := range []string{chapterRun, redraftRun} {
		assert.Equal(t, []request{post("/consistency/check", map[string]any{"book_id": "book-writer",
			"chapter_content": "It was a long, dark night.", "chapter_number": 3.0})}, strip(studioCalls[run]))
	}

	// The chapter: its create, blob-summary's two adds and the first run's status and derived
	// blob (in either order of the runs), the two updates, the second run's.
	d := streamDeltas(t, js, chapter)
	require.Len(t, d, 9, deltaTypes(d))
	state, err := blob.Fold(d)
	require.NoError(t, err)
	assert.Equal(t, []string{blob.DerivedBlobID(chapterRun, 0), blob.DerivedBlobID(redraftRun, 0)}, state.Derived)
	meta := asJSON(t, string(state.Metadata)).(map[string]any)
	assert.Equal(t, "expanded", meta["status"])
	assert.JSONEq(t, foldedJSON(t, d), waitAPIBlob(t, apiURL, chapter, 9))
	expanded := streamDeltas(t, js, blob.DerivedBlobID(chapterRun, 0))
	require.Len(t, expanded, 1)
	assert.JSONEq(t, `{"content": "It was a long, dark night.", "metadata": {"type": "expanded_chapter", "original_id": "`+chapter+
		`", "chapter_number": 3, "consistency_score": 0.9, "word_count": 6}}`, string(expanded[0].NewValue))
	od := streamDeltas(t, js, outline)
	assert.Equal(t, "v1 create, v2 add /metadata/status, v3 create_derived /derived", deltaTypes(od))
	outlined := streamDeltas(t, js, blob.DerivedBlobID(outlineRun, 0))
	require.Len(t, outlined, 1)
	assert.JSONEq(t, `{"content": "1. The night. 2. The day.", "metadata": {"type": "outline", "request_id": "`+outline+`"}}`,
		string(outlined[0].NewValue))
	for _, id := range []string{noneAsk, noMatch} {
		assert.Equal(t, "v1 create", deltaTypes(streamDeltas(t, js, id)), "blob %s is recorded and nothing else", id)
	}
	assert.Empty(t, deadLettered(t, js), "nothing dead-lettered")
}
