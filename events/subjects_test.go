package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

func TestValidToken(t *testing.T) {
	for _, ok := range []string{"b1", "0b7c9a8e-1f7c-4a53-9c39-0c4d6ad2e001", "book:my-novel", "a_b", "é"} {
		assert.NoError(t, events.ValidToken(ok), ok)
	}
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "a\tb", "a\nb", "a\x00", strings.Repeat("x", events.MaxTokenLength+1), "\xff"} {
		assert.Error(t, events.ValidToken(bad), "%q", bad)
	}
}

func TestSubjects(t *testing.T) {
	t.Run("blob", func(t *testing.T) {
		s, err := events.BlobSubject("b1", events.BlobUpdated)
		require.NoError(t, err)
		assert.Equal(t, "memmie.blobs.b1.updated", s)
		id, kind, err := events.ParseBlobSubject(s)
		require.NoError(t, err)
		assert.Equal(t, "b1", id)
		assert.Equal(t, events.BlobUpdated, kind)

		_, err = events.BlobSubject("b.1", events.BlobCreated)
		assert.Error(t, err)
		_, err = events.BlobSubject("b1", "touched")
		assert.Error(t, err)
		for _, bad := range []string{"memmie.blobs.b1", "memmie.blobs.b1.touched", "memmie.deltas.b1.created", "memmie.blobs.b1.created.x"} {
			_, _, err := events.ParseBlobSubject(bad)
			assert.Error(t, err, bad)
		}
	})

	t.Run("execution", func(t *testing.T) {
		s, err := events.ExecutionSubject("e1", events.TypeStepRetryScheduled)
		require.NoError(t, err)
		assert.Equal(t, "memmie.executions.e1.step.retry_scheduled", s)
		assert.Equal(t, "e1", strings.Split(s, ".")[events.ExecutionIDToken])
		id, tail, err := events.ParseExecutionSubject(s)
		require.NoError(t, err)
		assert.Equal(t, "e1", id)
		typ, ok := events.TypeOfTail(tail)
		assert.True(t, ok)
		assert.Equal(t, events.TypeStepRetryScheduled, typ)

		_, err = events.ExecutionSubject("e1", events.TypeDelta)
		assert.Error(t, err, "not an execution type")
		_, err = events.ExecutionSubject("e>", events.TypeExecutionQueued)
		assert.Error(t, err)

		_, ok = events.TypeOfTail("schedule.step_timeout")
		assert.False(t, ok, "a tail that is no event type")
		assert.Equal(t, "memmie.executions.e1.>", events.ExecutionFilter("e1"))

		for _, bad := range []string{"memmie.executions.e1", "memmie.executions.e1.", "memmie.execution.e1.queued"} {
			_, _, err := events.ParseExecutionSubject(bad)
			assert.Error(t, err, bad)
		}
	})

	t.Run("every execution type has a subject tail that maps back", func(t *testing.T) {
		for _, typ := range events.Types() {
			if !typ.IsExecution() {
				continue
			}
			s, err := events.ExecutionSubject("e1", typ)
			require.NoError(t, err)
			_, tail, err := events.ParseExecutionSubject(s)
			require.NoError(t, err)
			back, ok := events.TypeOfTail(tail)
			assert.True(t, ok)
			assert.Equal(t, typ, back)
		}
	})

	t.Run("delta", func(t *testing.T) {
		s, err := events.DeltaSubject("b1")
		require.NoError(t, err)
		assert.Equal(t, "memmie.deltas.b1", s)
		id, err := events.ParseDeltaSubject(s)
		require.NoError(t, err)
		assert.Equal(t, "b1", id)
		_, err = events.ParseDeltaSubject("memmie.deltas.b1.x")
		assert.Error(t, err)
	})

	t.Run("definition", func(t *testing.T) {
		for kind, want := range map[string]string{
			"schema":   "memmie.definitions.schemas.in",
			"workflow": "memmie.definitions.workflows.in",
			"provider": "memmie.definitions.providers.in",
		} {
			s, err := events.DefinitionSubject(kind, "in")
			require.NoError(t, err)
			assert.Equal(t, want, s)
			k, id, err := events.ParseDefinitionSubject(s)
			require.NoError(t, err)
			assert.Equal(t, kind, k)
			assert.Equal(t, "in", id)
		}
		_, err := events.DefinitionSubject("workflows", "x")
		assert.Error(t, err)
		_, _, err = events.ParseDefinitionSubject("memmie.definitions.things.x")
		assert.Error(t, err)
	})

	t.Run("inbox", func(t *testing.T) {
		assert.Equal(t, "memmie.inbox.e1", events.InboxSubject("e1"))
		id, err := events.ParseInboxSubject("memmie.inbox.e1")
		require.NoError(t, err)
		assert.Equal(t, "e1", id)
		_, err = events.ParseInboxSubject("memmie.inbox.e1.x")
		assert.Error(t, err)
	})

	t.Run("dead letter", func(t *testing.T) {
		s, err := events.DeadLetterSubject("blobs")
		require.NoError(t, err)
		assert.Equal(t, "memmie.deadletter.blobs", s)
		_, err = events.DeadLetterSubject("")
		assert.Error(t, err)
		s, err = events.DeadLetterRedrivenSubject("blobs")
		require.NoError(t, err)
		assert.Equal(t, "memmie.deadletter.blobs.redriven", s)
		_, err = events.DeadLetterRedrivenSubject("a.b")
		assert.Error(t, err)
	})
}

func TestDecodeBlobEvent(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		body    string
		wantErr string
		check   func(t *testing.T, ev events.BlobEvent, id string)
	}{
		{
			name:    "bare object",
			subject: "memmie.blobs.b1.created",
			body:    `{"blob_id":"b1","user_id":"u1","provider_ids":["book-writer"],"content":{"text":"x"},"metadata":{"type":"chapter"}}`,
			check: func(t *testing.T, ev events.BlobEvent, id string) {
				assert.Equal(t, "", id)
				assert.Equal(t, events.BlobCreated, ev.Kind)
				assert.Equal(t, []string{"book-writer"}, ev.ProviderIDs)
				assert.JSONEq(t, `{"text":"x"}`, string(ev.Content))
			},
		},
		{
			name:    "cloudevents envelope",
			subject: "memmie.blobs.b1.updated",
			body:    `{"specversion":"1.0","id":"ev-9","source":"studio","type":"memmie.blob.updated","data":{"blob_id":"b1","metadata":{"status":"draft"}}}`,
			check: func(t *testing.T, ev events.BlobEvent, id string) {
				assert.Equal(t, "ev-9", id)
				assert.Equal(t, events.BlobUpdated, ev.Kind)
				assert.Nil(t, ev.Content, "absent content stays absent")
				assert.Nil(t, ev.ProviderIDs, "absent provider_ids means every provider")
			},
		},
		{
			name:    "empty provider list is kept",
			subject: "memmie.blobs.b1.deleted",
			body:    `{"blob_id":"b1","provider_ids":[]}`,
			check: func(t *testing.T, ev events.BlobEvent, id string) {
				assert.NotNil(t, ev.ProviderIDs)
				assert.Empty(t, ev.ProviderIDs)
			},
		},
		{name: "blob id differs from subject", subject: "memmie.blobs.b1.created", body: `{"blob_id":"b2"}`, wantErr: "differs from the subject"},
		{
			name:    "derived blob",
			subject: "memmie.blobs.b1.created",
			body:    `{"blob_id":"b1","derived_from":{"blob_id":"b0","execution_id":"x","depth":1}}`,
			check: func(t *testing.T, ev events.BlobEvent, id string) {
				assert.Equal(t, &events.Derivation{BlobID: "b0", ExecutionID: "x", Depth: 1}, ev.DerivedFrom)
			},
		},
		{name: "derived update", subject: "memmie.blobs.b1.updated", body: `{"blob_id":"b1","content":1,"derived_from":{"blob_id":"b0","execution_id":"x","depth":1}}`,
			wantErr: "only a created event"},
		{name: "derived at depth 0", subject: "memmie.blobs.b1.created", body: `{"blob_id":"b1","derived_from":{"blob_id":"b0","execution_id":"x","depth":0}}`,
			wantErr: "depth"},
		{name: "derived from no execution", subject: "memmie.blobs.b1.created", body: `{"blob_id":"b1","derived_from":{"blob_id":"b0","depth":1}}`,
			wantErr: "execution_id"},
		{name: "misspelt field", subject: "memmie.blobs.b1.created", body: `{"blob_id":"b1","providers_ids":["x"]}`, wantErr: `unknown field "providers_ids"`},
		{name: "update without change", subject: "memmie.blobs.b1.updated", body: `{"blob_id":"b1"}`, wantErr: "content and/or metadata"},
		{name: "metadata not an object", subject: "memmie.blobs.b1.created", body: `{"blob_id":"b1","metadata":[1]}`, wantErr: "metadata"},
		{name: "bad subject", subject: "memmie.blobs.b1.touched", body: `{"blob_id":"b1"}`, wantErr: "unknown kind"},
		{name: "envelope type mismatch", subject: "memmie.blobs.b1.created",
			body: `{"specversion":"1.0","id":"x","type":"memmie.blob.deleted","data":{"blob_id":"b1"}}`, wantErr: "type"},
		{name: "envelope without id", subject: "memmie.blobs.b1.created",
			body: `{"specversion":"1.0","data":{"blob_id":"b1"}}`, wantErr: "id is required"},
		{name: "not json", subject: "memmie.blobs.b1.created", body: `nope`, wantErr: "blob event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, id, err := events.DecodeBlobEvent(tt.subject, []byte(tt.body))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Equal(t, tt.name == "blob id differs from subject", errors.Is(err, events.ErrBlobIDMismatch))
				return
			}
			require.NoError(t, err)
			tt.check(t, ev, id)
		})
	}
}

func TestID(t *testing.T) {
	assert.Equal(t, events.ID("e1", "k"), events.ID("e1", "k"))
	assert.NotEqual(t, events.ID("e1", "k"), events.ID("e1", "k2"))
	assert.NotEqual(t, events.ID("e1/x", "k"), events.ID("e1", "x/k"), "scope and key do not run together")
	// The namespace is fixed forever: stored ids must be re-derivable. The value is Python's
	// uuid.uuid5(UUID("53dab9d6-a921-4636-997a-c82d27f30271"), "e1\nqueued").
	assert.Equal(t, "c78ec98a-8805-5711-9584-e52031fce95e", events.ID("e1", "queued"))
}
