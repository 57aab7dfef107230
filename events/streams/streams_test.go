package streams_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

func TestConfigsChooseEveryLimit(t *testing.T) {
	cfgs := streams.Configs(streams.Options{})
	names := []string{}
	for _, cfg := range cfgs {
		names = append(names, cfg.Name)
		assert.Equal(t, jetstream.FileStorage, cfg.Storage, cfg.Name)
		assert.Equal(t, jetstream.DiscardNew, cfg.Discard, cfg.Name)
		assert.Equal(t, jetstream.LimitsPolicy, cfg.Retention, cfg.Name)
		assert.Zero(t, cfg.MaxAge, "%s expires nothing", cfg.Name)
		assert.EqualValues(t, -1, cfg.MaxMsgs, cfg.Name)
		assert.EqualValues(t, -1, cfg.MaxBytes, cfg.Name)
		assert.EqualValues(t, -1, cfg.MaxMsgsPerSubject, cfg.Name)
		assert.EqualValues(t, streams.MaxMsgSize, cfg.MaxMsgSize, cfg.Name)
		assert.Greater(t, int(cfg.MaxMsgSize), events.MaxEventSize, "an event and its headers fit in a message")
		window := streams.DuplicateWindow
		if cfg.Name == streams.Executions || cfg.Name == streams.Deltas || cfg.Name == streams.Definitions {
			window = streams.HistoryDuplicateWindow // every append expects the last sequence
		}
		assert.Equal(t, window, cfg.Duplicates, cfg.Name)
		assert.True(t, cfg.AllowDirect, cfg.Name)
		assert.Equal(t, 1, cfg.Replicas, cfg.Name)
	}
	assert.Equal(t, []string{streams.Blobs, streams.Executions, streams.Deltas, streams.Definitions, streams.DeadLetter}, names)

	exec, err := streams.Config(streams.Executions, streams.Options{Replicas: 3, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	// Timers are schedules on the inbox: the history needs neither schedules nor roll-ups.
	assert.False(t, exec.AllowMsgSchedules)
	assert.False(t, exec.AllowRollup)
	assert.Equal(t, jetstream.DiscardNew, exec.Discard)
	assert.True(t, exec.AllowAtomicPublish)
	assert.Equal(t, 3, exec.Replicas)
	assert.Equal(t, jetstream.MemoryStorage, exec.Storage)
	assert.Equal(t, jetstream.NoCompression, exec.Compression)
	_, err = streams.Config("NOPE", streams.Options{})
	assert.Error(t, err)
}

// The server accepts every configuration as it is (no silent rewrite), and the executions stream
// deduplicates and takes atomic batches guarded by the expected last sequence.
func TestServerAcceptsConfigs(t *testing.T) {
	_, nc, js := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, cfg := range streams.Configs(streams.Options{}) {
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		require.NoError(t, err, cfg.Name)
		got := s.CachedInfo().Config
		assert.Equal(t, cfg.Subjects, got.Subjects, cfg.Name)
		assert.Equal(t, cfg.Discard, got.Discard, cfg.Name)
		assert.Equal(t, cfg.AllowMsgSchedules, got.AllowMsgSchedules, cfg.Name)
		assert.Equal(t, cfg.AllowAtomicPublish, got.AllowAtomicPublish, cfg.Name)
		assert.Equal(t, cfg.AllowRollup, got.AllowRollup, cfg.Name)
		assert.Equal(t, cfg.Compression, got.Compression, cfg.Name)
		assert.Empty(t, streams.Diff(got, cfg), "what the server fills in is no difference")
	}

	const ex = "e1"
	at := time.Now().UTC().Truncate(time.Second)
	queued := events.NewExecution(&events.ExecutionQueued{ExecutionID: ex, WorkflowID: "wf", Workflow: json.RawMessage(`{}`)}, events.SourceAPI, at)

	t.Run("duplicate event ids are dropped", func(t *testing.T) {
		b, err := events.Marshal(queued)
		require.NoError(t, err)
		first, err := js.Publish(ctx, queued.Subject, b, jetstream.WithMsgID(queued.ID))
		require.NoError(t, err)
		again, err := js.Publish(ctx, queued.Subject, b, jetstream.WithMsgID(queued.ID))
		require.NoError(t, err)
		assert.True(t, again.Duplicate)
		assert.Equal(t, first.Sequence, again.Sequence)
	})

	t.Run("an atomic batch of an input and its decisions is guarded by the last sequence", func(t *testing.T) {
		stream, err := js.Stream(ctx, streams.Executions)
		require.NoError(t, err)
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(events.ExecutionFilter(ex)))
		require.NoError(t, err)
		last := info.State.LastSeq

		batch := func(id string, expect uint64, evs ...events.Event) (*nats.Msg, error) {
			for i, ev := range evs {
				b, err := events.Marshal(ev)
				require.NoError(t, err)
				m := nats.NewMsg(ev.Subject)
				m.Data = b
				m.Header.Set(events.HeaderMsgID, ev.ID)
				m.Header.Set("Nats-Batch-Id", id)
				m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
				if i == 0 {
					m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(expect, 10))
					m.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", events.ExecutionFilter(ex))
				}
				if i < len(evs)-1 {
					require.NoError(t, nc.PublishMsg(m))
					continue
				}
				m.Header.Set("Nats-Batch-Commit", "1")
				return nc.RequestMsg(m, 5*time.Second)
			}
			return nil, nil
		}
		started := events.NewExecution(&events.ExecutionStarted{ExecutionID: ex, Run: 1}, events.SourceDispatcher, at)
		skipped := events.NewExecution(&events.StepSkipped{ExecutionID: ex, Run: 1, StepID: "s"}, events.SourceCore, at)

		reply, err := batch("stale", last-1, started, skipped)
		require.NoError(t, err)
		var ack struct {
			Error *struct {
				ErrCode int `json:"err_code"`
			} `json:"error"`
		}
		require.NoError(t, json.Unmarshal(reply.Data, &ack))
		require.NotNil(t, ack.Error, "a batch decided on an old state is refused: %s", reply.Data)
		assert.Equal(t, 10071, ack.Error.ErrCode, "wrong last sequence")

		reply, err = batch("current", last, started, skipped)
		require.NoError(t, err)
		var ok struct {
			Seq   uint64 `json:"seq"`
			Count int    `json:"count"`
		}
		require.NoError(t, json.Unmarshal(reply.Data, &ok), string(reply.Data))
		assert.Equal(t, last+2, ok.Seq, string(reply.Data))
		assert.Equal(t, 2, ok.Count, string(reply.Data))
	})
}

// TestHistoryAppendRetriedPastTheWindow: on the executions stream as configured, but with its
// duplicate window cut to 200 ms, an append retried once the window has passed is still
// recognised as its own and stored once: the expectation refuses it, not the window (see
// HistoryDuplicateWindow).
func TestHistoryAppendRetriedPastTheWindow(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		fn   func(context.Context, jetstream.JetStream, string, []stream.Msg, stream.Expect) (stream.Ack, error)
	}{
		{"one event", 1, stream.Append},
		{"an atomic batch", 3, stream.Append},
		{"a chain", 3, stream.AppendChained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, js := natstest.Run(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg, err := streams.Config(streams.Executions, streams.Options{Storage: jetstream.MemoryStorage})
			require.NoError(t, err)
			cfg.Duplicates = 200 * time.Millisecond
			_, err = js.CreateStream(ctx, cfg)
			require.NoError(t, err)

			const ex = "e1"
			var msgs []stream.Msg
			for i := range tc.n {
				ev := events.NewExecution(&events.ExecutionQueued{ExecutionID: ex, WorkflowID: "wf", Workflow: json.RawMessage(`{}`)},
					events.SourceAPI, time.Now().UTC())
				subject := ev.Subject
				if i > 0 {
					subject = "memmie.executions." + ex + ".step.scheduled"
				}
				b, err := events.Marshal(ev)
				require.NoError(t, err)
				msgs = append(msgs, stream.Msg{Subject: subject, Data: b, ID: ev.ID + "-" + strconv.Itoa(i)})
			}
			expect := stream.Expect{FilterSubject: events.ExecutionFilter(ex)}
			ack, err := tc.fn(ctx, js, streams.Executions, msgs, expect)
			require.NoError(t, err)
			require.False(t, ack.Duplicate)

			// The window has passed once an id published again is stored again.
			probe := nats.NewMsg("memmie.executions.probe.queued")
			probe.Header.Set(jetstream.MsgIDHeader, "probe")
			_, err = js.PublishMsg(ctx, probe)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				pa, err := js.PublishMsg(ctx, probe)
				return err == nil && !pa.Duplicate
			}, 10*time.Second, 50*time.Millisecond, "the window passes")

			// The ack was "lost": the writer sends the very same append again.
			retry, err := tc.fn(ctx, js, streams.Executions, msgs, expect)
			require.NoError(t, err)
			assert.Equal(t, stream.Ack{Stream: streams.Executions, LastSeq: ack.LastSeq, Duplicate: true}, retry)
			s, err := js.Stream(ctx, streams.Executions)
			require.NoError(t, err)
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.ExecutionFilter(ex)))
			require.NoError(t, err)
			var stored uint64
			for _, n := range info.State.Subjects {
				stored += n
			}
			assert.Equal(t, uint64(tc.n), stored, "stored once")
		})
	}
}
