package blob_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// TestRandomInterleavings runs a blob's writer over random interleavings of client updates
// (some published twice) and 20 executions that finish at about the same time, each delivered
// again at random, and with writes cut short at random (a crash after some of an execution's
// deltas), then delivered again. Whatever the order: versions count from 1 with no gap, no
// delta id is written twice, every execution's deltas are written exactly once, every client
// event once, and the fold of the stream is the writer's state.
func TestRandomInterleavings(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { interleave(t, seed) })
	}
}

type work struct {
	event *blob.Event     // a client's blob event, or
	exec  *blob.Execution // an execution that completed
}

func interleave(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var s blob.State
	var stream []events.Delta
	now := t0
	write := func(d events.Delta) {
		require.NoError(t, s.Apply(d))
		stream = append(stream, d)
	}
	ev, err := blob.Parse(blob.Message{Subject: subject("b1", "created"), Body: []byte(chapter), MsgID: "e0"})
	require.NoError(t, err)
	dec, err := blob.Decide(s, ev, now)
	require.NoError(t, err)
	write(dec.Delta)

	var queue []work
	const executions, updates = 20, 8
	for i := range executions {
		x := &blob.Execution{ExecutionID: fmt.Sprintf("x%d", i), BlobID: "b1", BaseVersion: 1, SourceEventID: "e0",
			Output: outputOf(t, fmt.Sprintf(`{"delta_operations": [{"op": "test", "path": "/metadata/type", "value": "chapter"},
				{"op": "add", "path": "/metadata/x%d", "value": %d}, {"op": "add", "path": "/metadata/log", "value": []},
				{"op": "add", "path": "/metadata/log/-", "value": "x%d"}],
				"transformed_content": "by x%d", "created_blobs": [{"content": %d}]}`, i, i, i, i, i))}
		queue = append(queue, work{exec: x})
	}
	for i := range updates {
		body := fmt.Sprintf(`{"blob_id": "b1", "content": "client %d", "metadata": {"u%d": true}}`, i, i)
		ev, err := blob.Parse(blob.Message{Subject: subject("b1", "updated"), Body: []byte(body), MsgID: fmt.Sprintf("e%d", i+1)})
		require.NoError(t, err)
		queue = append(queue, work{event: &ev})
	}
	// Redeliveries and re-publishes.
	for range 10 {
		queue = append(queue, queue[rng.IntN(len(queue))])
	}
	rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })

	for steps := 0; len(queue) > 0; steps++ {
		require.Less(t, steps, 1000, "the writer must finish")
		w := queue[0]
		queue = queue[1:]
		now = now.Add(time.Second)
		if w.event != nil {
			dec, err := blob.Decide(s, *w.event, now)
			require.NoError(t, err)
			if !dec.Duplicate {
				write(dec.Delta)
			}
			continue
		}
		res, err := blob.Deltas(s, *w.exec, now)
		require.NoError(t, err, "seed %d: %s", seed, w.exec.ExecutionID)
		cut := len(res.Deltas)
		if cut > 0 && rng.IntN(4) == 0 {
			cut = rng.IntN(len(res.Deltas)) // a crash: the rest is delivered again later
			queue = append(queue, w)
			rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
		}
		for _, d := range res.Deltas[:cut] {
			write(d)
		}
	}

	ids := map[string]bool{}
	perExecution := map[string]int{}
	sources := map[string]int{}
	for i, d := range stream {
		require.Equal(t, int64(i+1), d.Version, "versions count from 1 with no gap")
		require.False(t, ids[d.ID], "delta %s written twice", d.ID)
		ids[d.ID] = true
		if d.Metadata.ExecutionID != "" {
			perExecution[d.Metadata.ExecutionID]++
		} else {
			sources[d.Metadata.SourceEventID]++
		}
	}
	for i := range executions {
		require.Equal(t, 5, perExecution[fmt.Sprintf("x%d", i)], "each execution's deltas exactly once")
	}
	require.Len(t, sources, updates+1)
	for id, n := range sources {
		require.Equal(t, 1, n, "event %s", id)
	}
	for i := range executions {
		require.Contains(t, string(s.Metadata), fmt.Sprintf(`"x%d":%d`, i, i))
	}
	require.Len(t, s.Derived, executions)
	require.Equal(t, 1, strings.Count(string(s.Metadata), `"log"`))
	folded, err := blob.Fold(stream)
	require.NoError(t, err)
	require.Equal(t, s, folded)
}
