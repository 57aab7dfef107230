package engine_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// TestOpenNeverRewritesStreams starts a process with other stream options than the streams
// have: its Open fails, naming the difference, and leaves the streams alone, so that a command
// stored meanwhile under the inbox's partitions is still taken up by the processes that share
// them.
func TestOpenNeverRewritesStreams(t *testing.T) {
	svc := newService(t, func(_ call, n int) (int, any) { return 503, map[string]any{"error": "busy"} })
	h := newHarness(t, map[string]string{"svc": svc.URL})
	h.register(`
id: retry_much_later
steps:
  - id: flaky
    type: api_call
    service: svc
    endpoint: /flaky
    retry: {max_attempts: 2, backoff_ms: 600000, jitter: 0}
`)
	id := h.start("retry_much_later", nil)
	h.wait(id, "waiting for its retry", func(s *execution.State) bool {
		return s.Steps[0].Status == execution.StepRetryScheduled
	})
	h.close()

	ctx := testContext(t)
	nc, err := nats.Connect(h.srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	other := func(opts streams.Options) *engine.Engine {
		cfg := baseConfig(t, nil)
		cfg.Streams = opts
		e, err := engine.New(js, cfg)
		require.NoError(t, err)
		return e
	}

	// While no process runs, a cancel is stored in the inbox, under partition p of 16.
	fewer := other(streams.Options{Partitions: 4})
	require.NoError(t, fewer.Cancel(ctx, id, "test"))

	err = fewer.Open(ctx)
	require.ErrorAs(t, err, new(*stream.MismatchError))
	assert.Contains(t, err.Error(), "stream MEMMIE_INBOX: partitions are 16 on the server, 4 wanted: start with --partitions 16, "+
		"or change them with 'memmie streams update --partitions 4' on an empty inbox")
	s, err := js.Stream(ctx, streams.Inbox)
	require.NoError(t, err)
	n, ok := streams.PartitionsOf(s.CachedInfo().Config)
	require.True(t, ok)
	assert.Equal(t, 16, n, "the transform is unchanged")

	for _, tt := range []struct {
		name string
		opts streams.Options
		msg  string
	}{
		{"other storage", streams.Options{Storage: jetstream.MemoryStorage}, "storage is file on the server, memory wanted"},
		// One server cannot hold three replicas, but the comparison refuses before asking it.
		{"other replicas", streams.Options{Replicas: 3}, "replicas are 1 on the server, 3 wanted: start with --replicas 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := other(tt.opts).Open(ctx)
			require.ErrorAs(t, err, new(*stream.MismatchError))
			assert.Contains(t, err.Error(), tt.msg)
			for _, name := range []string{streams.Executions, streams.Inbox, streams.Leases} {
				s, err := js.Stream(ctx, name)
				require.NoError(t, err)
				assert.Equal(t, jetstream.FileStorage, s.CachedInfo().Config.Storage, name)
				assert.Equal(t, 1, s.CachedInfo().Config.Replicas, name)
			}
		})
	}

	// A process with the streams' options takes the cancel up.
	h.open()
	h.waitStatus(id, execution.StatusCancelled)
}
