package stream_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/jetstream/stream"
)

func loadIDs(t *testing.T, js jetstream.JetStream, name, filterSubject string) []string {
	t.Helper()
	got, err := stream.Load(context.Background(), js, name, filterSubject)
	require.NoError(t, err)
	var ids []string
	for _, m := range got {
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}

func ids(msgs []stream.Msg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

func TestAppendChained(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()
	first, err := stream.AppendChained(ctx, js, name, events("e1", "a", 3), stream.Expect{FilterSubject: filter("e1")})
	require.NoError(t, err)
	assert.Equal(t, stream.Ack{Stream: name, LastSeq: 3}, first)

	_, err = stream.AppendChained(ctx, js, name, events("e1", "late", 2), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: 1})
	require.ErrorIs(t, err, stream.ErrConflict)
	var conflict *stream.ConflictError
	require.ErrorAs(t, err, &conflict)
	assert.Zero(t, conflict.Stored)
	assert.Equal(t, ids(events("e1", "a", 3)), loadIDs(t, js, name, filter("e1")))

	_, err = stream.AppendChained(ctx, js, name, events("e1", "x", 1), stream.Expect{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "needs a FilterSubject")
}

func TestAppendChainedResumes(t *testing.T) {
	for stored := range 4 {
		t.Run(fmt.Sprintf("%d of 3 stored before", stored), func(t *testing.T) {
			js, name := newStream(t)
			ctx := context.Background()
			msgs := events("e1", "d", 3)
			expect := stream.Expect{FilterSubject: filter("e1")}
			// An earlier call stored a prefix, then its writer died.
			if stored > 0 {
				_, err := stream.AppendChained(ctx, js, name, msgs[:stored], expect)
				require.NoError(t, err)
			}

			ack, err := stream.AppendChained(ctx, js, name, msgs, expect)
			require.NoError(t, err)
			assert.Equal(t, uint64(3), ack.LastSeq)
			assert.Equal(t, stored > 0, ack.Duplicate)
			assert.Equal(t, ids(msgs), loadIDs(t, js, name, filter("e1")))
		})
	}
}

func TestAppendChainedConflictAfterPrefix(t *testing.T) {
	js, name := newStream(t)
	ctx := context.Background()
	msgs := events("e1", "mine", 3)
	expect := stream.Expect{FilterSubject: filter("e1")}
	ack, err := stream.AppendChained(ctx, js, name, msgs[:1], expect)
	require.NoError(t, err)
	// Another writer saw the prefix and wrote after it.
	_, err = stream.Append(ctx, js, name, events("e1", "other", 1), stream.Expect{FilterSubject: filter("e1"), LastSubjectSeq: ack.LastSeq})
	require.NoError(t, err)

	_, err = stream.AppendChained(ctx, js, name, msgs, expect)
	require.ErrorIs(t, err, stream.ErrConflict)
	var conflict *stream.ConflictError
	require.ErrorAs(t, err, &conflict)
	assert.Equal(t, 0, conflict.Stored, "this call stored nothing: the prefix was an earlier call's")
	assert.Equal(t, []string{"e1-mine-0", "e1-other-0"}, loadIDs(t, js, name, filter("e1")))
}
