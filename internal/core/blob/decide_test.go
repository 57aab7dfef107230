package blob_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// in is a blob event as a client publishes it.
type in struct {
	kind, body, msgID string
}

func subject(blobID, kind string) string { return "memmie.blobs." + blobID + "." + kind }

// history decides and applies each event in turn, as the writer does, and returns the state
// and the deltas appended.
func history(t *testing.T, blobID string, evs ...in) (blob.State, []events.Delta) {
	t.Helper()
	var s blob.State
	var deltas []events.Delta
	for i, e := range evs {
		ev, err := blob.Parse(blob.Message{Subject: subject(blobID, e.kind), Body: []byte(e.body), MsgID: e.msgID})
		require.NoError(t, err, "event %d", i)
		dec, err := blob.Decide(s, ev, t0.Add(time.Duration(i)*time.Second))
		require.NoError(t, err, "event %d", i)
		if dec.Duplicate {
			continue
		}
		require.NoError(t, s.Apply(dec.Delta), "event %d", i)
		deltas = append(deltas, dec.Delta)
	}
	return s, deltas
}

const chapter = `{"blob_id": "b1", "user_id": "u1", "content": "It was a dark night.", "metadata": {"type": "chapter", "status": "draft"}}`

func TestParse(t *testing.T) {
	envelope := `{"specversion": "1.0", "id": "ce-1", "source": "/studio", "type": "memmie.blob.created", "data": ` + chapter + `}`
	tests := []struct {
		name, subject, body, msgID string
		wantID                     string
		want                       blob.Reason // "" when it parses
		wantErr                    bool        // an error that is not a refusal
	}{
		{"bare object", subject("b1", "created"), chapter, "m1", "m1", "", false},
		{"CloudEvents envelope", subject("b1", "created"), envelope, "m1", "ce-1", "", false},
		{"not JSON", subject("b1", "created"), `{"blob_id": "b1"`, "m1", "", blob.ReasonInvalidJSON, false},
		{"empty body", subject("b1", "created"), ``, "m1", "", blob.ReasonInvalidJSON, false},
		{"unknown field", subject("b1", "created"), `{"blob_id": "b1", "provider_id": ["x"]}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"metadata not an object", subject("b1", "created"), `{"blob_id": "b1", "metadata": [1]}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"provider_ids not strings", subject("b1", "created"), `{"blob_id": "b1", "provider_ids": [1]}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"not an object", subject("b1", "created"), `"b1"`, "m1", "", blob.ReasonInvalidEvent, false},
		{"update with nothing", subject("b1", "updated"), `{"blob_id": "b1"}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"no blob_id", subject("b1", "created"), `{"content": 1}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"blob_id of another blob", subject("b2", "created"), chapter, "m1", "", blob.ReasonBlobIDMismatch, false},
		{"envelope of the wrong type", subject("b1", "deleted"), envelope, "m1", "", blob.ReasonInvalidEvent, false},
		{"envelope without id", subject("b1", "created"), `{"specversion": "1.0", "data": ` + chapter + `}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"bad subject", "memmie.blobs.b1.touched", chapter, "m1", "", blob.ReasonInvalidEvent, false},
		{"derived_from on an update", subject("b1", "updated"), `{"blob_id": "b1", "content": 1, "derived_from": {"blob_id": "p", "execution_id": "x", "depth": 1}}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"derived_from depth 0", subject("b1", "created"), `{"blob_id": "b1", "derived_from": {"blob_id": "p", "execution_id": "x", "depth": 0}}`, "m1", "", blob.ReasonInvalidEvent, false},
		{"no id at all", subject("b1", "created"), chapter, "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := blob.Parse(blob.Message{Subject: tt.subject, Body: []byte(tt.body), MsgID: tt.msgID})
			var refusal *blob.Refusal
			switch {
			case tt.wantErr:
				require.Error(t, err)
				assert.NotErrorAs(t, err, &refusal)
			case tt.want != "":
				require.ErrorAs(t, err, &refusal)
				assert.Equal(t, tt.want, refusal.Reason, refusal.Error())
			default:
				require.NoError(t, err)
				assert.Equal(t, tt.wantID, ev.ID)
				assert.Equal(t, "b1", ev.Data.BlobID)
				assert.Equal(t, events.BlobCreated, ev.Kind())
			}
		})
	}
}

func TestDecide(t *testing.T) {
	created := in{"created", chapter, "e1"}
	tests := []struct {
		name    string
		before  []in
		event   in
		want    blob.Reason // a refusal
		dup     int64       // a duplicate of this version
		typ     string
		newVal  string
		oldVal  string
		content string // the blob's content and metadata after the delta
		meta    string
	}{
		{name: "created", event: created, typ: events.DeltaCreate,
			newVal:  `{"content":"It was a dark night.","metadata":{"status":"draft","type":"chapter"}}`,
			content: `"It was a dark night."`, meta: `{"status":"draft","type":"chapter"}`},
		{name: "created with nothing", event: in{"created", `{"blob_id": "b1"}`, "e1"}, typ: events.DeltaCreate,
			newVal: `{"content":null,"metadata":{}}`, content: `null`, meta: `{}`},
		{name: "created with null metadata", event: in{"created", `{"blob_id": "b1", "metadata": null, "content": {"b": 1, "a": [1.50, "<x>"]}}`, "e1"},
			typ: events.DeltaCreate, newVal: `{"content":{"a":[1.50,"<x>"],"b":1},"metadata":{}}`, content: `{"a":[1.50,"<x>"],"b":1}`, meta: `{}`},
		{name: "content replaces", before: []in{created}, event: in{"updated", `{"blob_id": "b1", "content": {"text": "new"}}`, "e2"},
			typ: events.DeltaUpdate, newVal: `{"content":{"text":"new"}}`, oldVal: `{"content":"It was a dark night."}`,
			content: `{"text":"new"}`, meta: `{"status":"draft","type":"chapter"}`},
		{name: "metadata merges (RFC 7396)", before: []in{created},
			event: in{"updated", `{"blob_id": "b1", "metadata": {"status": "final", "type": null, "tags": {"a": 1, "b": null}}}`, "e2"},
			typ:   events.DeltaUpdate, newVal: `{"metadata":{"status":"final","tags":{"a":1}}}`,
			oldVal:  `{"metadata":{"status":"draft","type":"chapter"}}`,
			content: `"It was a dark night."`, meta: `{"status":"final","tags":{"a":1}}`},
		{name: "both", before: []in{created}, event: in{"updated", `{"blob_id": "b1", "content": null, "metadata": {"z": "<b>"}}`, "e2"},
			typ: events.DeltaUpdate, newVal: `{"content":null,"metadata":{"status":"draft","type":"chapter","z":"<b>"}}`,
			oldVal:  `{"content":"It was a dark night.","metadata":{"status":"draft","type":"chapter"}}`,
			content: `null`, meta: `{"status":"draft","type":"chapter","z":"<b>"}`},
		{name: "null metadata alone", before: []in{created}, event: in{"updated", `{"blob_id": "b1", "metadata": null}`, "e2"},
			want: blob.ReasonInvalidEvent},
		{name: "deleted", before: []in{created}, event: in{"deleted", `{"blob_id": "b1"}`, "e2"}, typ: events.DeltaDelete,
			oldVal:  `{"content":"It was a dark night.","metadata":{"status":"draft","type":"chapter"}}`,
			content: `"It was a dark night."`, meta: `{"status":"draft","type":"chapter"}`},
		{name: "update of no blob", event: in{"updated", `{"blob_id": "b1", "content": 1}`, "e2"}, want: blob.ReasonNotFound},
		{name: "delete of no blob", event: in{"deleted", `{"blob_id": "b1"}`, "e2"}, want: blob.ReasonNotFound},
		{name: "update of a deleted blob", before: []in{created, {"deleted", `{"blob_id": "b1"}`, "e2"}},
			event: in{"updated", `{"blob_id": "b1", "content": 1}`, "e3"}, want: blob.ReasonDeleted},
		{name: "delete of a deleted blob", before: []in{created, {"deleted", `{"blob_id": "b1"}`, "e2"}},
			event: in{"deleted", `{"blob_id": "b1"}`, "e3"}, want: blob.ReasonDeleted},
		{name: "second created", before: []in{created}, event: in{"created", chapter, "e2"}, want: blob.ReasonExists},
		{name: "created after a delete", before: []in{created, {"deleted", `{"blob_id": "b1"}`, "e2"}},
			event: in{"created", chapter, "e3"}, want: blob.ReasonExists},
		{name: "created twice is a duplicate", before: []in{created}, event: created, dup: 1},
		{name: "an old update again is a duplicate", before: []in{created, {"updated", `{"blob_id": "b1", "content": 2}`, "e2"},
			{"updated", `{"blob_id": "b1", "content": 3}`, "e3"}}, event: in{"updated", `{"blob_id": "b1", "content": 2}`, "e2"}, dup: 2},
		{name: "a delete again is a duplicate", before: []in{created, {"deleted", `{"blob_id": "b1"}`, "e2"}},
			event: in{"deleted", `{"blob_id": "b1"}`, "e2"}, dup: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := history(t, "b1", tt.before...)
			ev, err := blob.Parse(blob.Message{Subject: subject("b1", tt.event.kind), Body: []byte(tt.event.body), MsgID: tt.event.msgID})
			if err == nil {
				var dec blob.Decision
				dec, err = blob.Decide(s, ev, t0)
				if err == nil {
					check(t, s, dec, tt.dup, tt.typ, tt.newVal, tt.oldVal, tt.content, tt.meta)
				}
			}
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			var refusal *blob.Refusal
			require.ErrorAs(t, err, &refusal)
			assert.Equal(t, tt.want, refusal.Reason, refusal.Error())
		})
	}
}

func check(t *testing.T, s blob.State, dec blob.Decision, dup int64, typ, newVal, oldVal, content, meta string) {
	t.Helper()
	if dup > 0 {
		assert.True(t, dec.Duplicate)
		assert.Equal(t, dup, dec.Version)
		assert.Empty(t, dec.Delta.ID)
		return
	}
	require.False(t, dec.Duplicate)
	d := dec.Delta
	assert.Equal(t, typ, d.Type)
	assert.Equal(t, s.Version+1, d.Version)
	assert.Equal(t, s.Version, d.BaseVersion)
	assert.Equal(t, d.Version, dec.Version)
	assert.Equal(t, newVal, string(d.NewValue))
	assert.Equal(t, oldVal, string(d.OldValue))
	assert.Equal(t, blob.EventDeltaID("b1", d.Metadata.SourceEventID), d.ID)
	before := s.Clone()
	require.NoError(t, s.Apply(d))
	assert.Equal(t, content, string(s.Content))
	assert.Equal(t, meta, string(s.Metadata))
	assert.Equal(t, d.Type == events.DeltaDelete, s.Deleted)
	// The delta as stored (encoding/json escapes HTML in it) gives the same state.
	ev, err := events.Decode(mustMarshal(t, d))
	require.NoError(t, err)
	require.NoError(t, before.Apply(*ev.Data.(*events.Delta)))
	assert.Equal(t, s, before)
}

func mustMarshal(t *testing.T, d events.Delta) []byte {
	t.Helper()
	subject, err := events.DeltaSubject(d.BlobID)
	require.NoError(t, err)
	b, err := events.Marshal(events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subject, Time: d.Timestamp, Data: &d})
	require.NoError(t, err)
	return b
}

func TestDecideLineage(t *testing.T) {
	s, deltas := history(t, "b1", in{"created", chapter, "e1"},
		in{"updated", `{"blob_id": "b1", "user_id": "u2", "metadata": {"status": "final"}}`, "e2"})
	require.Len(t, deltas, 2)
	assert.Equal(t, events.DeltaMetadata{SourceEventID: "e1", UserID: "u1"}, deltas[0].Metadata)
	assert.Equal(t, events.DeltaMetadata{SourceEventID: "e2", UserID: "u2"}, deltas[1].Metadata)
	assert.Equal(t, "u1", s.UserID, "the owner is the creator")
	assert.Equal(t, deltas[1].Metadata, s.Last)
	assert.Equal(t, deltas[1].ID, s.LastDeltaID)
	assert.Equal(t, t0.Add(time.Second), s.UpdatedAt)

	// The same event id on another blob is another delta.
	assert.NotEqual(t, blob.EventDeltaID("b1", "e1"), blob.EventDeltaID("b2", "e1"))

	// A state of another blob is the caller's bug, not the client's.
	ev, err := blob.Parse(blob.Message{Subject: subject("b2", "deleted"), Body: []byte(`{"blob_id": "b2"}`), MsgID: "e3"})
	require.NoError(t, err)
	_, err = blob.Decide(s, ev, t0)
	var refusal *blob.Refusal
	require.Error(t, err)
	assert.NotErrorAs(t, err, &refusal)
}

func TestDecideIsPure(t *testing.T) {
	s, _ := history(t, "b1", in{"created", chapter, "e1"})
	before, err := json.Marshal(s)
	require.NoError(t, err)
	ev, err := blob.Parse(blob.Message{Subject: subject("b1", "updated"), Body: []byte(`{"blob_id": "b1", "metadata": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}}`), MsgID: "e2"})
	require.NoError(t, err)
	first, err := blob.Decide(s, ev, t0)
	require.NoError(t, err)
	for range 20 { // the library's merge adds keys in map order; the delta must not show it
		again, err := blob.Decide(s, ev, t0)
		require.NoError(t, err)
		assert.Equal(t, first, again)
	}
	after, err := json.Marshal(s)
	require.NoError(t, err)
	assert.JSONEq(t, string(before), string(after), "Decide does not change the state")
}

func TestDecideTooLarge(t *testing.T) {
	long := func(n int) string { return `"` + strings.Repeat("a", n) + `"` }
	// A delta must fit in an event: an old_value goes first, since Fold never reads it.
	s, _ := history(t, "b1", in{"created", `{"blob_id": "b1", "content": ` + long(60<<10) + `}`, "e1"})
	ev, err := blob.Parse(blob.Message{Subject: subject("b1", "updated"), Body: []byte(`{"blob_id": "b1", "content": ` + long(events.MaxEventSize-(40<<10)) + `}`), MsgID: "e2"})
	require.NoError(t, err)
	dec, err := blob.Decide(s, ev, t0)
	require.NoError(t, err)
	assert.Nil(t, dec.Delta.OldValue)
	_, err = events.Marshal(blob.DeltaEvent(dec.Delta))
	require.NoError(t, err)

	// An event whose delta cannot fit at all is refused.
	ev, err = blob.Parse(blob.Message{Subject: subject("b2", "created"), Body: []byte(`{"blob_id": "b2", "content": ` + long(events.MaxEventSize-100) + `}`), MsgID: "e1"})
	require.NoError(t, err)
	_, err = blob.Decide(blob.State{}, ev, t0)
	var refusal *blob.Refusal
	require.ErrorAs(t, err, &refusal)
	assert.Equal(t, blob.ReasonTooLarge, refusal.Reason)
}
