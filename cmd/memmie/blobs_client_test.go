package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/natsserver"
)

// TestClientUserBlobRoundTrip: serve runs as nats.conf's engine user; a client connected as
// its client user publishes a blob event and receives the blob's deltas, by a plain
// subscription on memmie.deltas.> and by an ordered JetStream consumer, and cannot publish to
// memmie.deltas.> (neither plainly nor through JetStream): the stream holds memmie's deltas only.
func TestClientUserBlobRoundTrip(t *testing.T) {
	const blobID = "e1000000-0000-4000-8000-000000000001"
	srv, err := natsserver.Start(natsserver.Config{ConfigFile: "../../nats.conf", Port: -1, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	_, password, err := configEngineUser("../../nats.conf")
	require.NoError(t, err)
	passwordFile := filepath.Join(t.TempDir(), "engine-password")
	require.NoError(t, os.WriteFile(passwordFile, []byte(password), 0o600))
	startBlobServe(t, srv.ClientURL(), "--definitions", "../../definitions", "--nats-user", "engine",
		"--nats-password-file", passwordFile)

	var (
		mu         sync.Mutex
		violations []string
	)
	client, err := nats.Connect(srv.ClientURL(), nats.UserInfo("client", "client-dev-password"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
				mu.Lock()
				violations = append(violations, err.Error())
				mu.Unlock()
			}
		}))
	require.NoError(t, err)
	t.Cleanup(client.Close)
	js, err := jetstream.New(client)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()

	live, err := client.SubscribeSync("memmie.deltas.>")
	require.NoError(t, err)
	require.NoError(t, client.Flush())
	ordered, err := js.OrderedConsumer(ctx, streams.Deltas, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"memmie.deltas." + blobID}})
	require.NoError(t, err)

	ack, err := js.Publish(ctx, "memmie.blobs."+blobID+".created", []byte(`{"blob_id": "`+blobID+`",
		"user_id": "0b7c7e58-7a8f-4d6c-9a0a-0a4c1d2e3f40", "content": "hello", "metadata": {"type": "note"}}`),
		jetstream.WithMsgID("client-note-1"))
	require.NoError(t, err, "the client publishes blob events")
	assert.Equal(t, streams.Blobs, ack.Stream)

	// blob-summary's workflow makes the blob's versions 2 and 3.
	read := func(next func() ([]byte, string, error)) []string {
		var got []string
		for len(got) < 3 {
			data, subject, err := next()
			require.NoError(t, err, "after %v", got)
			ev, err := events.Decode(data)
			require.NoError(t, err)
			d := ev.Data.(*events.Delta)
			assert.Equal(t, "memmie.deltas."+blobID, subject)
			assert.Equal(t, ev.ID, d.ID)
			got = append(got, deltaTypes([]events.Delta{*d}))
		}
		return got
	}
	want := []string{"v1 create", "v2 add /metadata/summary", "v3 add /metadata/summarized_by"}
	assert.Equal(t, want, read(func() ([]byte, string, error) {
		m, err := live.NextMsg(e2eWait)
		if err != nil {
			return nil, "", err
		}
		return m.Data, m.Subject, nil
	}), "by subscription")
	assert.Equal(t, want, read(func() ([]byte, string, error) {
		m, err := ordered.Next(jetstream.FetchMaxWait(e2eWait))
		if err != nil {
			return nil, "", err
		}
		return m.Data(), m.Subject(), nil
	}), "by ordered consumer")

	// Writing a delta is refused: a plain publish is a permission violation, a JetStream publish
	// fails, and the stream keeps the three deltas memmie wrote.
	forged := []byte(`{"specversion": "1.0", "id": "forged", "type": "memmie.delta", "data": {"version": 4}}`)
	require.NoError(t, client.Publish("memmie.deltas."+blobID, forged))
	require.NoError(t, client.Flush())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range violations {
			if strings.Contains(v, `"memmie.deltas.`+blobID+`"`) {
				return true
			}
		}
		return false
	}, e2eWait, 10*time.Millisecond, "a permission violation for the plain publish")
	pubCtx, pubCancel := context.WithTimeout(ctx, 2*time.Second)
	defer pubCancel()
	_, err = js.Publish(pubCtx, "memmie.deltas."+blobID, forged, jetstream.WithMsgID("forged"))
	require.Error(t, err, "a JetStream publish to memmie.deltas.> fails")
	msgs, err := js.Stream(ctx, streams.Deltas)
	require.NoError(t, err)
	info, err := msgs.Info(ctx, jetstream.WithSubjectFilter("memmie.deltas."+blobID))
	require.NoError(t, err)
	assert.Equal(t, map[string]uint64{"memmie.deltas." + blobID: 3}, info.State.Subjects, "only memmie's deltas")
}
