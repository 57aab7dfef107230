package blobstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/jetstream/blobstore"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

var now = time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)

// decide gives the delta of a blob event on the state.
func decide(t *testing.T, s blob.State, subject, body, id string) events.Delta {
	t.Helper()
	ev, err := blob.Parse(blob.Message{Subject: subject, Body: []byte(body), MsgID: id})
	require.NoError(t, err)
	dec, err := blob.Decide(s, ev, now)
	require.NoError(t, err)
	require.False(t, dec.Duplicate)
	return dec.Delta
}

func TestStoreAppendsWithOptimisticConcurrency(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, js := natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(ctx, js, streams.Configs(streams.Options{})))
	a, err := blobstore.New[blob.State](js, blobstore.Config{})
	require.NoError(t, err)
	b, err := blobstore.New[blob.State](js, blobstore.Config{})
	require.NoError(t, err)

	e, err := a.Get(ctx, "b1")
	require.NoError(t, err)
	require.Zero(t, e.Seq)
	e, err = a.Append(ctx, e, decide(t, e.State, "memmie.blobs.b1.created", `{"blob_id": "b1", "metadata": {"n": 1}}`, "e1"))
	require.NoError(t, err)
	require.EqualValues(t, 1, e.State.Version)

	// Another writer (b) appends version 2; a's cached state is now behind.
	eb, err := b.Get(ctx, "b1")
	require.NoError(t, err)
	require.EqualValues(t, 1, eb.State.Version)
	_, err = b.Append(ctx, eb, decide(t, eb.State, "memmie.blobs.b1.updated", `{"blob_id": "b1", "metadata": {"n": 2}}`, "e2"))
	require.NoError(t, err)

	stale, err := a.Get(ctx, "b1")
	require.NoError(t, err)
	require.EqualValues(t, 1, stale.State.Version, "Get serves the cache without reading")
	_, err = a.Append(ctx, stale, decide(t, stale.State, "memmie.blobs.b1.updated", `{"blob_id": "b1", "metadata": {"n": 3}}`, "e3"))
	require.ErrorIs(t, err, stream.ErrConflict)

	loadsBefore := a.Stats().HistoryLoads
	fresh, err := a.Fresh(ctx, "b1")
	require.NoError(t, err)
	require.EqualValues(t, 2, fresh.State.Version)
	require.JSONEq(t, `{"n": 2}`, string(fresh.State.Metadata))
	require.Equal(t, loadsBefore+1, a.Stats().HistoryLoads, "Fresh reads the tail once")
	fresh, err = a.Append(ctx, fresh, decide(t, fresh.State, "memmie.blobs.b1.updated", `{"blob_id": "b1", "metadata": {"n": 3}}`, "e3"))
	require.NoError(t, err)
	require.EqualValues(t, 3, fresh.State.Version)

	// A fresh store folds the whole history, and AtVersion rebuilds an older version.
	c, err := blobstore.New[blob.State](js, blobstore.Config{})
	require.NoError(t, err)
	ec, err := c.Get(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, fresh.Seq, ec.Seq)
	require.JSONEq(t, `{"n": 3}`, string(ec.State.Metadata))
	v1, err := c.AtVersion(ctx, ec, 1, func(s *blob.State) int64 { return s.Version })
	require.NoError(t, err)
	require.JSONEq(t, `{"n": 1}`, string(v1.Metadata))

	// A history past the bound is refused with a clear error.
	small, err := blobstore.New[blob.State](js, blobstore.Config{MaxDeltas: 2})
	require.NoError(t, err)
	_, err = small.Get(ctx, "b1")
	require.ErrorIs(t, err, blobstore.ErrTooLarge)
	require.ErrorContains(t, err, "version 3")
	require.False(t, errors.Is(err, blobstore.ErrUnreadable))
}

// TestStoreLoadsLongHistory loads a blob of 10,001 versions, one past the bound the store had
// when a fold cost quadratic time: the history is folded, and the first event of the blob is
// still recognised as a duplicate at version 1.
func TestStoreLoadsLongHistory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, _, js := natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(ctx, js, streams.Configs(streams.Options{})))

	const versions = 10_001
	var s blob.State
	var acks []jetstream.PubAckFuture
	for i := range versions {
		subject, body := "memmie.blobs.long.updated", fmt.Sprintf(`{"blob_id": "long", "content": %d}`, i)
		if i == 0 {
			subject, body = "memmie.blobs.long.created", `{"blob_id": "long", "content": 0}`
		}
		d := decide(t, s, subject, body, fmt.Sprintf("e%d", i))
		require.NoError(t, s.Apply(d))
		ev, err := blobstore.Event(d)
		require.NoError(t, err)
		data, err := events.Marshal(ev)
		require.NoError(t, err)
		ack, err := js.PublishAsync(ev.Subject, data, jetstream.WithMsgID(d.ID))
		require.NoError(t, err)
		acks = append(acks, ack)
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("the deltas were not stored in time")
		}
	}

	store, err := blobstore.New[blob.State](js, blobstore.Config{})
	require.NoError(t, err)
	e, err := store.Get(ctx, "long")
	require.NoError(t, err)
	require.EqualValues(t, versions, e.State.Version)
	require.Equal(t, s, e.State, "the store's fold is the writer's state")
	require.JSONEq(t, fmt.Sprint(versions-1), string(e.State.Content))

	ev, err := blob.Parse(blob.Message{Subject: "memmie.blobs.long.created", Body: []byte(`{"blob_id": "long", "content": 0}`), MsgID: "e0"})
	require.NoError(t, err)
	dec, err := blob.Decide(e.State, ev, now)
	require.NoError(t, err)
	require.True(t, dec.Duplicate, "the first event, 10,000 versions ago, is a duplicate")
	require.EqualValues(t, 1, dec.Version)
}
