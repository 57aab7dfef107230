package main

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/core/trigger"
)

var natsURLLine = regexp.MustCompile(`(?m)^NATS: (\S+)$`)

// TestDevKilledWhileBlobEventsAreProcessed publishes 100 blob events to memmie dev (the
// shipped definitions: each starts blob-summary's workflow, which writes two deltas), kills dev
// with SIGKILL while they are being processed, and starts it again on the same data
// directory: every blob ends with exactly its three deltas, versions 1..3, each once; every
// execution is queued and completed once; nothing is dead-lettered; the API serves every blob
// at version 3.
func TestDevKilledWhileBlobEventsAreProcessed(t *testing.T) {
	const n = 100
	dataDir := devDataDir(t)
	args := []string{"--data-dir", dataDir, "--definitions", "../../definitions", "--http-addr", freeAddr(t),
		"--nats-listen", freeAddr(t)}
	first := startDevProcess(t, nil, args...)
	apiURL, took := first.ready(t)
	t.Logf("first start: ready in %s", took.Round(time.Millisecond))
	m := natsURLLine.FindStringSubmatch(first.stdout.String())
	require.NotNil(t, m, first.stdout.String())
	nc, err := nats.Connect(m[1], nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	const user = "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40"
	ids := make([]string, n)
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	var acks []jetstream.PubAckFuture
	for i := range ids {
		ids[i] = fmt.Sprintf("d0000000-0000-4000-8000-%012d", i)
		msg := nats.NewMsg("memmie.blobs." + ids[i] + ".created")
		msg.Data = []byte(`{"blob_id": "` + ids[i] + `", "user_id": "` + user + `", "content": ` + fmt.Sprint(i) + `, "metadata": {"type": "note"}}`)
		msg.Header.Set(jetstream.MsgIDHeader, "kill-"+ids[i])
		f, err := js.PublishMsgAsync(msg)
		require.NoError(t, err)
		acks = append(acks, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("the blob events were not acknowledged")
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		}
	}

	// Kill once some deltas are written, well before the 300 of the end.
	var atKill uint64
	waitWithin(t, e2eWait, "blob events under way", func() (bool, string) {
		s, err := js.Stream(ctx, streams.Deltas)
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		atKill = info.State.Msgs
		return atKill >= 30, fmt.Sprintf("%d deltas", atKill)
	}, first)
	first.kill(t)
	t.Logf("killed with SIGKILL at %d of %d deltas", atKill, 3*n)
	require.Less(t, atKill, uint64(3*n), "the kill came while the events were processed")

	second := startDevProcess(t, nil, args...)
	apiURL2, took := second.ready(t)
	t.Logf("restart after kill -9: ready in %s", took.Round(time.Millisecond))
	require.Equal(t, apiURL, apiURL2)
	killedAt := time.Now()
	waitSettled(t, js, second)
	t.Logf("settled %s after the restart", time.Since(killedAt).Round(time.Millisecond))

	queued, ended := queuedExecutions(t, js), endedExecutions(t, js)
	require.Len(t, queued, n, "one execution per blob event")
	for i, id := range ids {
		run := trigger.ExecutionID(id, "kill-"+id, "blob-summary", "blob_summary")
		require.Contains(t, queued, run, "blob %s", id)
		assert.Equal(t, []events.Type{events.TypeExecutionCompleted}, ended[run], "execution %s of blob %s ends once", run, id)
		d := streamDeltas(t, js, id)
		require.Equal(t, "v1 create, v2 add /metadata/summary, v3 add /metadata/summarized_by", deltaTypes(d), "blob %s", id)
		assert.Equal(t, blob.EventDeltaID(id, "kill-"+id), d[0].ID)
		for k, x := range d[1:] {
			assert.Equal(t, blob.ExecutionDeltaID(run, k), x.ID, "blob %s", id)
		}
		assert.JSONEq(t, fmt.Sprint(i), string(must(blob.Fold(d)).Content))
	}
	assert.Empty(t, deadLettered(t, js), "nothing dead-lettered")
	for _, id := range ids {
		waitAPIBlob(t, apiURL2, id, 3)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
