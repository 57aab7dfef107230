package engine_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

// TestBlobProcessingEndToEnd runs the example blob-processing workflow, registered from the
// real definitions directory, against an httptest Studio, and checks every request Studio got.
func TestBlobProcessingEndToEnd(t *testing.T) {
	const (
		blobID = "0b7f3c1e-8d2a-4f6b-9c3d-2e1f0a9b8c7d"
		userID = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
	)
	studio := newService(t, func(c call, _ int) (int, any) {
		switch c.Path {
		case "/blobs/validate":
			return 200, map[string]any{"valid": true, "errors": []any{}}
		case "/blobs/" + blobID + "/metadata":
			return 200, map[string]any{"content_type": "text/markdown", "size": 42, "checksum": "sha256:abc"}
		case "/providers/trigger":
			return 200, map[string]any{"results": []any{map[string]any{"provider_id": "book-writer", "summary": "a chapter"}}, "ignored": true}
		case "/deltas/generate":
			return 200, map[string]any{
				"deltas":        []any{map[string]any{"op": "add", "path": "/metadata/summary", "value": "a chapter"}},
				"created_blobs": []any{map[string]any{"content": "derived", "metadata": map[string]any{"type": "summary"}}},
			}
		}
		return 404, map[string]any{"error": "no such path"}
	})
	h := newHarness(t, map[string]string{"studio": studio.URL})
	set, err := definitions.Load("../../../definitions")
	require.NoError(t, err)
	_, err = h.reg.RegisterSet(testContext(t), set)
	require.NoError(t, err)

	input := map[string]any{
		"blob_id":      blobID,
		"user_id":      userID,
		"provider_ids": []any{"book-writer"},
		"blob": map[string]any{
			"content":  "# Chapter 1",
			"metadata": map[string]any{"type": "chapter", "status": "draft"},
		},
	}
	id := h.start("blob_processing_workflow", input)
	s := h.waitEnd(id)
	require.Equal(t, execution.StatusCompleted, s.Status, "error: %+v", s.Error)
	assert.Equal(t, jsonValue(t, `{
		"delta_operations": [{"op": "add", "path": "/metadata/summary", "value": "a chapter"}],
		"created_blobs": [{"content": "derived", "metadata": {"type": "summary"}}]
	}`), s.Output)

	headers := func(step string) map[string]string {
		return map[string]string{
			"Content-Type":          "application/json",
			"Idempotency-Key":       id + "/" + step,
			"X-Memmie-Execution-Id": id,
			"X-Memmie-Step-Id":      step,
			"X-Memmie-Attempt":      "1",
		}
	}
	assert.Equal(t, []call{
		{
			Method: "POST", Path: "/blobs/validate",
			Body: jsonValue(t, `{"blob_id": "`+blobID+`", "content": "# Chapter 1",
				"metadata": {"type": "chapter", "status": "draft"}}`),
			Headers: headers("validate_blob"),
		},
		{
			Method: "POST", Path: "/blobs/" + blobID + "/metadata",
			Body:    jsonValue(t, `{"blob_id": "`+blobID+`", "extract_fields": ["content_type", "size", "checksum"]}`),
			Headers: headers("extract_metadata"),
		},
		{
			Method: "POST", Path: "/providers/trigger",
			Body: jsonValue(t, `{"blob_id": "`+blobID+`", "provider_ids": ["book-writer"],
				"metadata": {"content_type": "text/markdown", "size": 42, "checksum": "sha256:abc"}}`),
			Headers: headers("trigger_providers"),
		},
		{
			Method: "POST", Path: "/deltas/generate",
			Body: jsonValue(t, `{"blob_id": "`+blobID+`",
				"provider_outputs": [{"provider_id": "book-writer", "summary": "a chapter"}]}`),
			Headers: headers("generate_deltas"),
		},
	}, studio.Calls())

	assert.Equal(t, []events.Type{
		events.TypeExecutionQueued,
		events.TypeExecutionStarted, events.TypeStepScheduled,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeStepScheduled,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeStepScheduled,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeStepScheduled,
		events.TypeStepReported, events.TypeStepSucceeded, events.TypeExecutionCompleted,
	}, h.types(id))
}
