package definitions

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConditionHolds(t *testing.T) {
	var data map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{
		"blob_id": "b1",
		"provider_ids": ["book-writer", "blob-summary"],
		"content": "It was a dark and stormy night.",
		"metadata": {"type": "chapter", "status": "draft", "chapter_number": 3, "words": 1200.5,
		             "tags": ["draft", 7], "published": false, "editor": null, "updated": "2026-03-01"}
	}`), &data))

	tests := []struct {
		field, op string
		value     any
		want      bool
	}{
		{"metadata.type", OpEq, "chapter", true},
		{"metadata.type", OpEq, "outline", false},
		{"metadata.chapter_number", OpEq, 3, true}, // int vs the float64 of encoding/json
		{"metadata.chapter_number", OpEq, "3", false},
		{"metadata.published", OpEq, false, true},
		{"metadata.tags", OpEq, []any{"draft", 7.0}, true},
		{"metadata.missing", OpEq, "x", false},
		{"metadata.type", OpNe, "outline", true},
		{"metadata.type", OpNe, "chapter", false},
		{"metadata.missing", OpNe, "x", true},
		{"metadata.chapter_number", OpGt, 2, true},
		{"metadata.chapter_number", OpGt, 3, false},
		{"metadata.chapter_number", OpGte, 3, true},
		{"metadata.chapter_number", OpLt, 3.5, true},
		{"metadata.chapter_number", OpLte, 2, false},
		{"metadata.words", OpLte, 1200.5, true},
		{"metadata.updated", OpGt, "2026-01-01", true}, // strings in byte order
		{"metadata.updated", OpLt, "2026-01-01", false},
		{"metadata.type", OpGt, 1, false}, // a string and a number do not compare
		{"metadata.missing", OpLt, 10, false},
		{"metadata.status", OpIn, []any{"draft", "review"}, true},
		{"metadata.status", OpIn, []any{"final"}, false},
		{"metadata.chapter_number", OpIn, []any{1, 2, 3}, true},
		{"metadata.missing", OpIn, []any{"x"}, false},
		{"metadata.status", OpNotIn, []any{"final", "archived"}, true},
		{"metadata.status", OpNotIn, []any{"draft"}, false},
		{"metadata.missing", OpNotIn, []any{"x"}, true},
		{"content", OpContains, "stormy", true},
		{"content", OpContains, "sunny", false},
		{"provider_ids", OpContains, "book-writer", true},
		{"provider_ids", OpContains, "other", false},
		{"metadata.tags", OpContains, 7, true},
		{"metadata.chapter_number", OpContains, "3", false},
		{"metadata.type", OpExists, true, true},
		{"metadata.type", OpExists, nil, true}, // value defaults to true
		{"metadata.type", OpExists, false, false},
		{"metadata.missing", OpExists, true, false},
		{"metadata.missing", OpExists, false, true},
		{"metadata.editor", OpExists, true, false},    // null counts as absent
		{"provider_ids.0", OpEq, "book-writer", true}, // a number indexes a list
		{"provider_ids.5", OpExists, true, false},
		{"content.x", OpExists, true, false},
		{"metadata.type", OpMatches, "^chap", true},
		{"metadata.type", OpMatches, "ter", true}, // unanchored
		{"metadata.type", OpMatches, "^ter", false},
		{"metadata.chapter_number", OpMatches, "3", false}, // only strings match
		// Invalid conditions never hold.
		{"metadata.type", OpMatches, "(", false},
		{"metadata.status", OpIn, "draft", false},
		{"metadata.type", "like", "chapter", false},
	}
	for _, tt := range tests {
		c := TriggerCondition{Field: tt.field, Operator: tt.op, Value: tt.value}
		assert.Equal(t, tt.want, c.Holds(data), "%s %s %v", tt.field, tt.op, tt.value)
	}
}

func TestTriggerMatches(t *testing.T) {
	p, err := ParseProvider("providers/book-writer.yaml", mustRead(t, "providers/book-writer.yaml"))
	require.NoError(t, err)
	chapter, outline := &p.Workflows[0], &p.Workflows[1]
	require.Equal(t, "book_chapter_processing", chapter.WorkflowID)
	require.Equal(t, "book_outline_generation", outline.WorkflowID)

	meta := func(kv ...string) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return map[string]any{"blob_id": "b1", "metadata": m}
	}
	tests := []struct {
		name    string
		binding *ProviderBinding
		event   string
		data    map[string]any
		want    bool
	}{
		{"chapter created", chapter, EventOnCreate, meta("type", "chapter"), true},
		{"chapter created, blob action", chapter, "created", meta("type", "chapter"), true},
		{"chapter deleted", chapter, EventOnDelete, meta("type", "chapter"), false},
		{"draft chapter updated", chapter, "updated", meta("type", "chapter", "status", "draft"), true},
		{"final chapter updated", chapter, EventOnUpdate, meta("type", "chapter", "status", "final"), false},
		{"draft outline updated", chapter, EventOnUpdate, meta("type", "outline", "status", "draft"), false},
		{"no metadata", chapter, EventOnCreate, map[string]any{"blob_id": "b1"}, false},
		{"outline request created", outline, EventOnCreate, meta("type", "outline_request"), true},
		{"outline request updated", outline, EventOnUpdate, meta("type", "outline_request"), false},
		{"unknown event", outline, "touched", meta("type", "outline_request"), false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.binding.Matches(tt.event, tt.data), tt.name)
	}

	// A trigger with no conditions matches every event of its kind.
	any := Trigger{Event: EventOnDelete}
	assert.True(t, any.Matches("deleted", nil))
	assert.False(t, any.Matches("created", nil))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := readFile(path)
	require.NoError(t, err)
	return data
}
