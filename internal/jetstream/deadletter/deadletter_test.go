package deadletter_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
)

func TestNew(t *testing.T) {
	now := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	m := deadletter.Message{Stream: "MEMMIE_INBOX", Sequence: 7, Subject: "memmie.inbox.e1",
		Header: nats.Header{"X-Trace": {"t-1"}}, Data: []byte("garbage")}
	ev, err := deadletter.New("orchestrator", m, "decode: bad", now)
	require.NoError(t, err)
	assert.Equal(t, "memmie.deadletter.orchestrator", ev.Subject)
	again, err := deadletter.New("orchestrator", m, "another reason", now.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, ev.ID, again.ID, "the same message dead-lettered twice has one id")
	other, err := deadletter.New("runner", m, "decode: bad", now)
	require.NoError(t, err)
	assert.NotEqual(t, ev.ID, other.ID, "each source records its own")

	b, err := events.Marshal(ev)
	require.NoError(t, err)
	got, err := events.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, &events.DeadLetter{Source: "orchestrator", Stream: "MEMMIE_INBOX", Sequence: 7, Subject: "memmie.inbox.e1",
		Headers: map[string][]string{"X-Trace": {"t-1"}}, Data: []byte("garbage"), Reason: "decode: bad"}, got.Data)

	big := m
	big.Data = []byte(strings.Repeat("x", events.MaxDeadLetterData+10))
	ev, err = deadletter.New("runner", big, "too big", now)
	require.NoError(t, err)
	dl := ev.Data.(*events.DeadLetter)
	assert.True(t, dl.Truncated)
	assert.Len(t, dl.Data, events.MaxDeadLetterData)
	_, err = events.Marshal(ev)
	assert.NoError(t, err, "a dead letter of a message at the size limit fits in an event")

	_, err = deadletter.New("bad.source", m, "x", now)
	assert.Error(t, err)
	_, err = deadletter.New("runner", m, "", now)
	assert.Error(t, err)
}

func TestPublished(t *testing.T) {
	tests := []struct{ stream, stored, want string }{
		{"MEMMIE_INBOX", "memmie.inbox.3.e1", "memmie.inbox.e1"},
		{"MEMMIE_BLOBS", "memmie.blobs.3.b1.updated", "memmie.blobs.b1.updated"},
		{"MEMMIE_BLOBS", "memmie.blobs.b1.updated", "memmie.blobs.b1.updated"},     // stored before the partitions
		{"MEMMIE_BLOBS", "memmie.blobs.x.b1.updated", "memmie.blobs.x.b1.updated"}, // not a partition
		{"MEMMIE_EXECUTIONS", "memmie.executions.e1.completed", "memmie.executions.e1.completed"},
		{"", "memmie.blobs.0.b1.created", "memmie.blobs.b1.created"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, deadletter.Published(tt.stream, tt.stored), "%s %s", tt.stream, tt.stored)
	}
}
