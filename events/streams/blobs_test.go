package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestParseBlobPartitionSubject(t *testing.T) {
	tests := []struct {
		subject, published string
		partition          int
		ok                 bool
	}{
		{"memmie.blobs.0.b1.created", "memmie.blobs.b1.created", 0, true},
		{"memmie.blobs.15.0b7f3c1e-8d2a.updated", "memmie.blobs.0b7f3c1e-8d2a.updated", 15, true},
		{"memmie.blobs.3.b1.renamed", "memmie.blobs.b1.renamed", 3, true}, // the kind is the handler's to refuse
		{"memmie.blobs.b1.created", "", 0, false},
		{"memmie.blobs.x.b1.created", "", 0, false},
		{"memmie.blobs.01.b1.created", "", 0, false},
		{"memmie.blobs.-1.b1.created", "", 0, false},
		{"memmie.blobs.1.b1.created.more", "", 0, false},
		{"memmie.inbox.1.b1.created", "", 0, false},
	}
	for _, tt := range tests {
		p, published, err := streams.ParseBlobPartitionSubject(tt.subject)
		if !tt.ok {
			assert.Error(t, err, tt.subject)
			continue
		}
		require.NoError(t, err, tt.subject)
		assert.Equal(t, tt.partition, p, tt.subject)
		assert.Equal(t, tt.published, published, tt.subject)
	}
}

// TestBlobPartitions: a blob event published to memmie.blobs.<id>.<kind> is stored under its
// blob's partition, the same for every event of the blob.
func TestBlobPartitions(t *testing.T) {
	_, _, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 4
	cfg, err := streams.Config(streams.Blobs, streams.Options{Partitions: n})
	require.NoError(t, err)
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	require.NoError(t, err)
	assert.Equal(t, "memmie.blobs.{{partition(4,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", s.CachedInfo().Config.SubjectTransform.Destination)
	got, ok := streams.PartitionsOf(s.CachedInfo().Config)
	assert.True(t, ok)
	assert.Equal(t, n, got)

	partitionOf := map[string]int{}
	for i := range 40 {
		id := fmt.Sprintf("blob-%d", i)
		for _, kind := range []string{"created", "updated", "deleted"} {
			ack, err := js.Publish(ctx, "memmie.blobs."+id+"."+kind, []byte(`{}`))
			require.NoError(t, err)
			m, err := s.GetMsg(ctx, ack.Sequence)
			require.NoError(t, err)
			p, published, err := streams.ParseBlobPartitionSubject(m.Subject)
			require.NoError(t, err, m.Subject)
			assert.Equal(t, "memmie.blobs."+id+"."+kind, published)
			assert.Less(t, p, n)
			if kind != "created" {
				assert.Equal(t, partitionOf[id], p, "every event of %s on one partition", id)
			}
			partitionOf[id] = p
		}
	}
	used := map[int]bool{}
	for _, p := range partitionOf {
		used[p] = true
	}
	assert.Len(t, used, n, "40 ids spread over every partition")
}

func TestDiffUnpartitionedBlobs(t *testing.T) {
	wanted, err := streams.Config(streams.Blobs, streams.Options{})
	require.NoError(t, err)
	old := wanted
	old.SubjectTransform = nil // as an older memmie created it
	diffs := streams.Diff(old, wanted)
	require.Len(t, diffs, 1)
	assert.Equal(t, streams.Refuse, diffs[0].Kind)
	assert.Equal(t, "stream MEMMIE_BLOBS: partitions are none on the server, 16 wanted: the stream's subject transform is not this memmie's; "+
		"apply it with 'memmie streams update' once every blob event is processed "+
		"(the store of a memmie dev: stop it, then add --data-dir <its data dir>)", diffs[0].String())
	four, err := streams.Config(streams.Blobs, streams.Options{Partitions: 4})
	require.NoError(t, err)
	diffs = streams.Diff(wanted, four)
	require.Len(t, diffs, 1)
	assert.Equal(t, "stream MEMMIE_BLOBS: partitions are 16 on the server, 4 wanted: start with --partitions 16, "+
		"or change them with 'memmie streams update --partitions 4' once every blob event is processed "+
		"(the store of a memmie dev: stop it, then add --data-dir <its data dir>)", diffs[0].String())
}
