package engine_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// orderUpdates is how many updates each blob gets between its created and its deleted.
const orderUpdates = 50

// fastBlobs makes a crashed process's blob event come back soon.
func fastBlobs(c *engine.Config) { c.Blobs.AckWait = 2 * time.Second }

// publishInterleaved publishes, for every blob, a created event, orderUpdates updates (each
// replacing the content with {"n": i} and merging {"u": i} into the metadata) and a deleted
// event, the blobs' events interleaved, back to back on one connection: the server stores
// them in that order. It returns each blob's event ids in publish order.
func publishInterleaved(t testing.TB, js jetstream.JetStream, blobIDs []string) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	var acks []jetstream.PubAckFuture
	pub := func(blobID, kind, body string) {
		id := fmt.Sprintf("%s-%d", blobID, len(ids[blobID]))
		ids[blobID] = append(ids[blobID], id)
		msg := nats.NewMsg("memmie.blobs." + blobID + "." + kind)
		msg.Data = []byte(body)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		f, err := js.PublishMsgAsync(msg)
		require.NoError(t, err)
		acks = append(acks, f)
	}
	for _, b := range blobIDs {
		pub(b, "created", fmt.Sprintf(`{"blob_id": %q, "content": {"n": 0}, "metadata": {"u": 0}}`, b))
	}
	for i := 1; i <= orderUpdates; i++ {
		for _, b := range blobIDs {
			pub(b, "updated", fmt.Sprintf(`{"blob_id": %q, "content": {"n": %d}, "metadata": {"u": %d}}`, b, i, i))
		}
	}
	for _, b := range blobIDs {
		pub(b, "deleted", fmt.Sprintf(`{"blob_id": %q}`, b))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(waitFor):
		t.Fatalf("blob events not acknowledged within %s", waitFor)
	}
	for _, f := range acks {
		select {
		case err := <-f.Err():
			require.NoError(t, err)
		case <-f.Ok():
		}
	}
	return ids
}

// blobLetters returns the dead letters of blob events, by blob id.
func blobLetters(t testing.TB, js jetstream.JetStream) map[string][]*events.DeadLetter {
	t.Helper()
	msgs, err := stream.Load(testContext(t), js, streams.DeadLetter, events.SubjectDeadLetter)
	require.NoError(t, err)
	out := map[string][]*events.DeadLetter{}
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(t, err)
		dl := ev.Data.(*events.DeadLetter)
		if dl.Stream != streams.Blobs {
			continue
		}
		id, _, err := events.ParseBlobSubject(dl.Subject)
		require.NoError(t, err, "a dead-lettered blob event is recorded under the subject it was published to")
		out[id] = append(out[id], dl)
	}
	return out
}

// waitBlobsSettled waits until every event of every blob is recorded as a delta or
// dead-lettered, and returns the deltas.
func waitBlobsSettled(t testing.TB, js jetstream.JetStream, ids map[string][]string) map[string][]events.Delta {
	t.Helper()
	deadline := time.Now().Add(2 * waitFor)
	for {
		letters := blobLetters(t, js)
		out := map[string][]events.Delta{}
		settled := true
		for b, want := range ids {
			msgs, err := stream.Load(testContext(t), js, streams.Deltas, "memmie.deltas."+b)
			require.NoError(t, err)
			for _, m := range msgs {
				ev, err := events.Decode(m.Data)
				require.NoError(t, err)
				out[b] = append(out[b], *ev.Data.(*events.Delta))
			}
			settled = settled && len(out[b])+len(letters[b]) >= len(want)
		}
		if settled {
			return out
		}
		if time.Now().After(deadline) {
			for b, want := range ids {
				t.Logf("blob %s: %d deltas, %d dead letters, %d events", b, len(out[b]), len(letters[b]), len(want))
			}
			t.Fatalf("blob events not settled within %s", 2*waitFor)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkPublishOrder checks that each blob's deltas record its events in publish order, with
// nothing dead-lettered, and that its final state is the fold of its events in that order.
func checkPublishOrder(t testing.TB, js jetstream.JetStream, ids map[string][]string, deltas map[string][]events.Delta) {
	t.Helper()
	letters := blobLetters(t, js)
	for _, b := range slices.Sorted(func(yield func(string) bool) {
		for b := range ids {
			if !yield(b) {
				return
			}
		}
	}) {
		for _, dl := range letters[b] {
			t.Errorf("blob %s: event %s dead-lettered: %s", b, dl.Subject, dl.Reason)
		}
		d := deltas[b]
		got := make([]string, len(d))
		for i, x := range d {
			require.EqualValues(t, i+1, x.Version, "blob %s: versions count from 1 with no gap", b)
			got[i] = x.Metadata.SourceEventID
		}
		if !assert.Equal(t, ids[b], got, "blob %s: its deltas record its events in publish order", b) {
			continue
		}
		s, err := blob.Fold(d)
		require.NoError(t, err)
		assert.True(t, s.Deleted, "blob %s: deleted last", b)
		assert.EqualValues(t, orderUpdates+2, s.Version)
		assert.JSONEq(t, fmt.Sprintf(`{"n": %d}`, orderUpdates), string(s.Content), "blob %s: the last update's content", b)
		var meta map[string]any
		require.NoError(t, json.Unmarshal(s.Metadata, &meta))
		assert.Equal(t, map[string]any{"u": float64(orderUpdates)}, meta, "blob %s: the metadata merged in order", b)
	}
}

// waitSharedPartitions waits until each process consumes some blob partitions and together
// all of them, each once.
func waitSharedPartitions(t testing.TB, procs ...*proc) {
	t.Helper()
	require.Eventually(t, func() bool {
		var all []int
		for _, p := range procs {
			parts := p.eng.Stats().BlobPartitions
			if len(parts) == 0 {
				return false
			}
			all = append(all, parts...)
		}
		slices.Sort(all)
		return len(all) == streams.DefaultPartitions && len(slices.Compact(all)) == streams.DefaultPartitions
	}, waitFor, 20*time.Millisecond, "the processes share the blob partitions")
}

// TestBlobEventsApplyInPublishOrderOnTwoProcesses publishes a created event, 50 updates and a
// deleted event for each of several blobs, interleaved and back to back, to two processes:
// each blob's deltas follow the publish order, so its final content is its last update's,
// and its deleted event never overtakes its other events.
func TestBlobEventsApplyInPublishOrderOnTwoProcesses(t *testing.T) {
	c := newCluster(t, nil, fastBlobs)
	p1, p2 := c.start("p1", nil), c.start("p2", nil)
	waitSharedPartitions(t, p1, p2)
	blobIDs := []string{"ord-a", "ord-b", "ord-c", "ord-d", "ord-e", "ord-f"}
	ids := publishInterleaved(t, c.admin, blobIDs)
	deltas := waitBlobsSettled(t, c.admin, ids)
	checkPublishOrder(t, c.admin, ids, deltas)
	for _, p := range []*proc{p1, p2} {
		st := p.eng.Stats()
		t.Logf("%s: partitions %v, blob events %d, blob store %+v", p.id, st.BlobPartitions, st.Loops["blobs"].Handled, st.Blobs)
	}
}

// TestBlobPartitionsTakenOverFromAKilledProcess kills a process halfway through the blob
// events, between a delta's append and its event's ack (faults.BlobsAppended): the other
// process takes its partitions over, and every blob's events are recorded once each, in
// publish order.
func TestBlobPartitionsTakenOverFromAKilledProcess(t *testing.T) {
	c := newCluster(t, nil, fastBlobs)
	var appended int
	p1 := c.start("p1", func(at faults.Point, _ string) bool {
		if at != faults.BlobsAppended {
			return false
		}
		appended++ // one worker: no other goroutine calls the hook
		return appended == 40
	}, func(cfg *engine.Config) { cfg.Blobs.Workers = 1 })
	p2 := c.start("p2", nil)
	waitSharedPartitions(t, p1, p2)
	before := p1.eng.Stats().BlobPartitions
	blobIDs := make([]string, 8)
	for i := range blobIDs {
		blobIDs[i] = fmt.Sprintf("kill-%d", i)
	}
	ids := publishInterleaved(t, c.admin, blobIDs)
	p1.waitCrashed()
	p1.stop()
	deltas := waitBlobsSettled(t, c.admin, ids)
	checkPublishOrder(t, c.admin, ids, deltas)
	assert.Len(t, p2.eng.Stats().BlobPartitions, streams.DefaultPartitions, "p2 took over p1's partitions %v", before)
}
