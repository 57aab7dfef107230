package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
)

// studioProvider runs the shipped blob-processing workflow on every new document, as Studio's
// own provider would.
const studioProvider = `provider:
  id: memmie-studio
  name: Memmie Studio
  type: processor
workflows:
  - workflow_id: blob_processing_workflow
    priority: 20
    triggers:
      - event: onCreate
        conditions:
          - field: metadata.type
            operator: eq
            value: document
`

// TestBlobProcessingPipeline: a client's created event of a document triggers the shipped
// blob-processing workflow; its 4 api_call steps call Studio (an httptest service registered
// as the workflow's "studio") with exactly the requests below, and its output becomes the
// blob's versions 2 to 4 and a derived blob, which the API serves as the stream folds them.
// With --max-derivation-depth 1, a document derived twice is recorded and starts nothing; the
// trigger matcher's router metrics are on /metrics.
func TestBlobProcessingPipeline(t *testing.T) {
	const (
		blobID = "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
		userID = "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"
		msgID  = "studio-doc-1"
	)
	studio := newRecorder(t, func(r request) (int, any) {
		switch r.Path {
		case "/blobs/validate":
			return 200, map[string]any{"valid": true, "errors": []any{}}
		case "/blobs/" + blobID + "/metadata":
			return 200, map[string]any{"content_type": "text/markdown", "size": 11, "checksum": "sha256:9f86d0"}
		case "/providers/trigger":
			return 200, map[string]any{"results": []any{map[string]any{"provider_id": "memmie-studio", "summary": "a greeting"}}}
		case "/deltas/generate":
			return 200, map[string]any{
				"deltas": []any{
					map[string]any{"op": "add", "path": "/metadata/summary", "value": "a greeting"},
					map[string]any{"op": "replace", "path": "/content", "value": "# Hello, world"},
				},
				"created_blobs": []any{map[string]any{"content": "a greeting", "metadata": map[string]any{"type": "summary"},
					"provider_ids": []any{}}},
			}
		}
		return 404, map[string]any{"error": "no route " + r.Path}
	})
	natsURL, js := natsWithStreams(t)
	defs := shippedDefinitions(t, map[string]string{"providers/memmie-studio.yaml": studioProvider})
	_, apiURL := startBlobServe(t, natsURL, "--definitions", defs,
		"--services", servicesFile(t, map[string]string{"studio": studio.URL}), "--max-derivation-depth", "1")

	// Past the bound (with the default, 3, it would start the workflow too).
	const deep = "6e2f3a4b-5c6d-4e7f-8091-a2b3c4d5e6f7"
	publishEvent(t, js, deep, "created", `{"blob_id": "`+deep+`", "user_id": "`+userID+`", "provider_ids": ["memmie-studio"],
		"content": "# Deep", "metadata": {"type": "document"},
		"derived_from": {"blob_id": "`+blobID+`", "execution_id": "x0", "depth": 2}}`, "deep-doc-1")
	waitVersion(t, js, deep, 1)

	publishEvent(t, js, blobID, "created", `{"blob_id": "`+blobID+`", "user_id": "`+userID+`",
		"provider_ids": ["memmie-studio"], "content": "# Hello", "metadata": {"type": "document", "status": "draft"}}`, msgID)
	d := waitVersion(t, js, blobID, 4)
	waitSettled(t, js)
	d = streamDeltas(t, js, blobID)

	id := trigger.ExecutionID(blobID, msgID, "memmie-studio", "blob_processing_workflow")
	queued := queuedExecutions(t, js)
	require.Len(t, queued, 1, "only the filtered provider's workflow, and not on the blob past the bound: %v", queued)
	require.Contains(t, queued, id)
	assert.Equal(t, "blob_processing_workflow", queued[id].WorkflowID)
	assert.Equal(t, 20, queued[id].Priority, "the provider's priority")
	assert.EqualValues(t, 1, queued[id].BaseVersion)
	assert.Equal(t, []events.Type{events.TypeExecutionCompleted}, endedExecutions(t, js)[id])

	post := func(path, body string) request {
		return request{Method: http.MethodPost, Path: path, Body: asJSON(t, body)}
	}
	var got []request
	for _, r := range studio.requests() {
		assert.Equal(t, id, r.ExecutionID, "%s %s", r.Method, r.Path)
		r.ExecutionID, r.StepID = "", ""
		got = append(got, r)
	}
	assert.Equal(t, []request{
		post("/blobs/validate", `{"blob_id": "`+blobID+`", "content": "# Hello", "metadata": {"type": "document", "status": "draft"}}`),
		post("/blobs/"+blobID+"/metadata", `{"blob_id": "`+blobID+`", "extract_fields": ["content_type", "size", "checksum"]}`),
		post("/providers/trigger", `{"blob_id": "`+blobID+`", "provider_ids": ["memmie-studio"],
			"metadata": {"content_type": "text/markdown", "size": 11, "checksum": "sha256:9f86d0"}}`),
		post("/deltas/generate", `{"blob_id": "`+blobID+`", "provider_outputs": [{"provider_id": "memmie-studio", "summary": "a greeting"}]}`),
	}, got, "each step once, in order, with the bodies its input_map makes")

	// The blob's history: the client's create, then the execution's three deltas.
	derived := blob.DerivedBlobID(id, 0)
	require.Len(t, d, 4, deltaTypes(d))
	assert.Equal(t, "v1 create, v2 add /metadata/summary, v3 replace /content, v4 create_derived /derived", deltaTypes(d))
	for i, x := range d[1:] {
		assert.Equal(t, blob.ExecutionDeltaID(id, i), x.ID)
		assert.EqualValues(t, 1, x.BaseVersion)
		assert.Equal(t, "memmie-studio", x.ProviderID)
		assert.Equal(t, events.DeltaMetadata{WorkflowID: "blob_processing_workflow", WorkflowRevision: 1, ExecutionID: id,
			SourceEventID: msgID}, x.Metadata)
	}
	assert.JSONEq(t, `{"blob_id": "`+derived+`", "content": "a greeting", "metadata": {"type": "summary"}}`, string(d[3].NewValue))

	// The API serves the blob, at its last version and at each one, as the stream folds it.
	assert.JSONEq(t, foldedJSON(t, d), waitAPIBlob(t, apiURL, blobID, 4))
	for v := int64(1); v <= 4; v++ {
		status, body := apiBlob(t, apiURL, blobID, v)
		require.Equal(t, http.StatusOK, status, body)
		assert.JSONEq(t, foldedJSON(t, d[:v]), body, "version %d", v)
	}
	state, err := blob.Fold(d)
	require.NoError(t, err)
	assert.JSONEq(t, `"# Hello, world"`, string(state.Content))
	assert.JSONEq(t, `{"type": "document", "status": "draft", "summary": "a greeting"}`, string(state.Metadata))

	// The derived blob is a blob of its own, whose empty provider_ids start nothing.
	dd := waitVersion(t, js, derived, 1)
	require.Len(t, dd, 1)
	assert.Equal(t, events.DeltaCreate, dd[0].Type)
	assert.JSONEq(t, fmt.Sprintf(`{"blob_id": %q, "execution_id": %q, "depth": 1}`, blobID, id),
		string(mustJSON(t, dd[0].Metadata.DerivedFrom)))
	assert.JSONEq(t, foldedJSON(t, dd), waitAPIBlob(t, apiURL, derived, 1))
	assert.Empty(t, deadLettered(t, js), "nothing dead-lettered")

	// The matcher's router handled the requests: the three blobs' created events.
	resp, err := http.Get(apiURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `memmie_triggers_handler_execution_time_seconds_count{handler_name="triggers",success="true"} 3`)
	// The one triggered execution's deltas, written on the blob still at the version it read,
	// timed from the blob event's delta; and its calls, all answered 200.
	for _, line := range []string{
		"memmie_blob_event_to_last_delta_seconds_count 1",
		"memmie_blob_outputs_unmeasured_total 0",
		fmt.Sprintf("memmie_step_calls_total{service=%q,status_class=%q} %d", "studio", "2xx", len(got)),
	} {
		assert.True(t, strings.Contains(string(body), "\n"+line+"\n"), "/metrics has %s", line)
	}
}
