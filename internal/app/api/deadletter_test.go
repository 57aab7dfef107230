package api_test

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/projections"
)

// serveDeadLetters serves the API over reg and a fresh database that the dead_letters
// projection fills from js, with a redriver on js.
func serveDeadLetters(t *testing.T, js jetstream.JetStream, reg *registry.Registry, eng api.Engine) *httptest.Server {
	t.Helper()
	pool := pgtest.New(t)
	runProjections(t, projections.Config{Pool: pool, JS: js, Log: testLogger(t)}, projections.NewDeadLetters(testLogger(t)))
	return serveAPI(t, api.Config{Registry: reg, Engine: eng, Views: views.New(pool), Logger: testLogger(t),
		Redriver: deadletter.NewWriter(js, deadletter.Config{})})
}

// deadLetterIDs returns the ids of a GET /v1/deadletter answer, in order.
func deadLetterIDs(t *testing.T, r response) []string {
	t.Helper()
	return listedIDs(t, r, "dead_letters", "id")
}

// pollGET GETs path until cond holds of the answer, for up to 60 s.
func pollGET(t *testing.T, srv *httptest.Server, path string, cond func(response) bool) response {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := do(t, srv, "GET", path, "")
		if cond(r) {
			return r
		}
		require.True(t, time.Now().Before(deadline), "GET %s not as wanted within 60s: %s", path, r.Raw)
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeadLetterEndpoints(t *testing.T) {
	_, _, js := natstest.Run(t)
	reg := startRegistry(t, js)
	srv := serveDeadLetters(t, js, reg, nil)
	ctx := testContext(t)

	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	w := deadletter.NewWriter(js, deadletter.Config{Now: func() time.Time { at = at.Add(time.Second); return at }})
	record := func(source string, m deadletter.Message, reason string) string {
		t.Helper()
		require.NoError(t, w.RecordMessage(ctx, source, m, reason))
		ev, err := deadletter.New(source, m, reason, at)
		require.NoError(t, err)
		return ev.ID
	}
	inbox := func(seq uint64) deadletter.Message {
		return deadletter.Message{Stream: streams.Inbox, Sequence: seq, Subject: "memmie.inbox.e" + string(rune('0'+seq)),
			Header: nats.Header{"Nats-Msg-Id": {"m"}, "X-Trace": {"t"}}, Data: []byte("poison " + string(rune('0'+seq)))}
	}
	first := record("orchestrator", inbox(1), "decode: bad")
	second := record("orchestrator", inbox(2), "decode: bad")
	runner := record("runner", deadletter.Message{Stream: streams.Executions, Sequence: 9,
		Subject: "memmie.executions.e1.step.scheduled", Data: []byte(`{}`)}, "not a scheduled attempt")
	big := inbox(3)
	big.Data = []byte(strings.Repeat("x", events.MaxDeadLetterData+1))
	cut := record("orchestrator", big, "too big")
	fifth := record("orchestrator", inbox(4), "decode: bad")
	newestFirst := []string{fifth, cut, runner, second, first}

	all := pollGET(t, srv, "/v1/deadletter", func(r response) bool { return len(deadLetterIDs(t, r)) == 5 })

	t.Run("newest first, without the message", func(t *testing.T) {
		assert.Equal(t, newestFirst, deadLetterIDs(t, all))
		assert.NotContains(t, all.Body, "next")
		row := all.Body["dead_letters"].([]any)[4].(map[string]any)
		assert.Equal(t, "orchestrator", row["source"])
		assert.Equal(t, "decode: bad", row["reason"])
		assert.Equal(t, "memmie.inbox.e1", row["subject"])
		assert.Equal(t, streams.Inbox, row["stream"])
		assert.Equal(t, 1.0, row["stream_seq"])
		assert.Equal(t, float64(len("poison 1")), row["size"])
		assert.Equal(t, false, row["truncated"])
		assert.NotContains(t, row, "data")
		assert.NotContains(t, row, "headers")
		assert.NotContains(t, row, "redriven_at")
		_, err := time.Parse(time.RFC3339Nano, row["recorded_at"].(string))
		assert.NoError(t, err)
	})

	t.Run("pages follow the cursor", func(t *testing.T) {
		got, pages := followPages(t, srv, "/v1/deadletter?limit=2", deadLetterIDs)
		assert.Equal(t, 3, pages)
		assert.Equal(t, newestFirst, got)
	})

	t.Run("by source", func(t *testing.T) {
		assert.Equal(t, []string{runner}, deadLetterIDs(t, do(t, srv, "GET", "/v1/deadletter?source=runner", "")))
		assert.Empty(t, deadLetterIDs(t, do(t, srv, "GET", "/v1/deadletter?source=timers", "")))
		page := do(t, srv, "GET", "/v1/deadletter?source=orchestrator&limit=3", "")
		assert.Equal(t, []string{fifth, cut, second}, deadLetterIDs(t, page))
		next := do(t, srv, "GET", "/v1/deadletter?source=orchestrator&limit=3&cursor="+url.QueryEscape(page.Body["next"].(string)), "")
		assert.Equal(t, []string{first}, deadLetterIDs(t, next))
	})

	t.Run("bad parameters are 400", func(t *testing.T) {
		for _, q := range []string{"source=a.b", "source=%20", "limit=0", "limit=501", "limit=x", "cursor=%21%21",
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("nope")),
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("12.")),
			"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("12.\xff"))} {
			r := do(t, srv, "GET", "/v1/deadletter?"+q, "")
			assert.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", q, r.Raw)
			assert.Equal(t, "bad_request", r.errorCode(), q)
		}
	})

	t.Run("one, with its message", func(t *testing.T) {
		r := do(t, srv, "GET", "/v1/deadletter/"+first, "")
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
		assert.Equal(t, first, r.Body["id"])
		assert.Equal(t, base64.StdEncoding.EncodeToString([]byte("poison 1")), r.Body["data"])
		assert.Equal(t, map[string]any{"Nats-Msg-Id": []any{"m"}, "X-Trace": []any{"t"}}, r.Body["headers"])
		assert.Equal(t, true, r.Body["redrivable"])
		assert.NotContains(t, r.Body, "not_redrivable")

		r = do(t, srv, "GET", "/v1/deadletter/"+runner, "")
		require.Equal(t, http.StatusOK, r.Status, r.Raw)
		assert.Equal(t, false, r.Body["redrivable"])
		assert.Contains(t, r.Body["not_redrivable"], "MEMMIE_EXECUTIONS")
	})

	t.Run("unknown is 404", func(t *testing.T) {
		for _, path := range []string{"/v1/deadletter/nope", "/v1/deadletter/nope/redrive"} {
			method := "GET"
			if strings.HasSuffix(path, "/redrive") {
				method = "POST"
			}
			r := do(t, srv, method, path, "")
			assert.Equal(t, http.StatusNotFound, r.Status, r.Raw)
			assert.Equal(t, "not_found", r.errorCode())
			assert.Contains(t, r.Body["error"].(map[string]any)["message"], "no such dead letter")
		}
	})

	t.Run("redrive, twice", func(t *testing.T) {
		r := do(t, srv, "POST", "/v1/deadletter/"+first+"/redrive", "")
		require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
		assert.Equal(t, first, r.Body["id"])
		assert.Equal(t, "memmie.inbox.e1", r.Body["subject"])
		assert.Equal(t, streams.Inbox, r.Body["stream"])
		assert.Equal(t, deadletter.RedriveMsgID(first), r.Body["msg_id"])
		assert.Equal(t, false, r.Body["duplicate"])
		seq := uint64(r.Body["seq"].(float64))

		s, err := js.Stream(ctx, streams.Inbox)
		require.NoError(t, err)
		msg, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		assert.Equal(t, []byte("poison 1"), msg.Data)
		assert.Equal(t, "t", msg.Header.Get("X-Trace"))
		assert.Equal(t, first, msg.Header.Get(deadletter.HeaderRedriveOf))

		again := do(t, srv, "POST", "/v1/deadletter/"+first+"/redrive", "")
		require.Equal(t, http.StatusOK, again.Status, again.Raw)
		assert.Equal(t, true, again.Body["duplicate"])
		assert.Equal(t, float64(seq), again.Body["seq"])
		info, err := s.Info(ctx)
		require.NoError(t, err)
		assert.Equal(t, uint64(1), info.State.Msgs, "published once")

		got := pollGET(t, srv, "/v1/deadletter/"+first, func(r response) bool { return r.Body["redriven_at"] != nil })
		assert.Equal(t, r.Body["redriven_at"], got.Body["redriven_at"])
		list := do(t, srv, "GET", "/v1/deadletter?limit=500", "")
		assert.Equal(t, newestFirst, deadLetterIDs(t, list), "a redrive is no dead letter")
		assert.Nil(t, do(t, srv, "GET", "/v1/deadletter/"+second, "").Body["redriven_at"])
	})

	t.Run("what cannot be redriven is 422", func(t *testing.T) {
		for id, want := range map[string]string{runner: "MEMMIE_EXECUTIONS", cut: "cut to"} {
			r := do(t, srv, "POST", "/v1/deadletter/"+id+"/redrive", "")
			assert.Equal(t, http.StatusUnprocessableEntity, r.Status, r.Raw)
			assert.Equal(t, "not_redrivable", r.errorCode())
			assert.Contains(t, r.Body["error"].(map[string]any)["message"], want)
		}
		r := do(t, srv, "DELETE", "/v1/deadletter/"+first, "")
		assert.Equal(t, http.StatusMethodNotAllowed, r.Status, r.Raw)
	})
}

func TestDeadLetterWithoutADatabase(t *testing.T) {
	srv, _ := newServer(t, &cannedEngine{})
	for _, req := range [][2]string{{"GET", "/v1/deadletter"}, {"GET", "/v1/deadletter/x"}, {"POST", "/v1/deadletter/x/redrive"}} {
		assertNoDatabase(t, do(t, srv, req[0], req[1], ""))
	}
}

// TestPoisonCommandIsRedriven: a command the orchestrator cannot read is dead-lettered by it,
// listed by GET /v1/deadletter, and its redrive sends the same bytes back to its inbox subject,
// where the orchestrator refuses it again, as a new dead letter that names the first.
func TestPoisonCommandIsRedriven(t *testing.T) {
	js, reg, eng := startEngine(t, nil, dispatcher.Config{})
	srv := serveDeadLetters(t, js, reg, eng)
	ctx := testContext(t)

	poison := []byte("\x00\x01 not an event {")
	const execution = "4b9f6a52-1c3d-4e5f-8a7b-9c0d1e2f3a4b"
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.InboxSubject(execution), Data: poison,
		Header: nats.Header{"Nats-Msg-Id": {"poison-1"}, "X-Client": {"test"}}})
	require.NoError(t, err)

	list := pollGET(t, srv, "/v1/deadletter?source=orchestrator", func(r response) bool {
		return r.Status == http.StatusOK && len(deadLetterIDs(t, r)) == 1
	})
	id := deadLetterIDs(t, list)[0]
	dl := do(t, srv, "GET", "/v1/deadletter/"+id, "")
	require.Equal(t, http.StatusOK, dl.Status, dl.Raw)
	assert.Equal(t, events.InboxSubject(execution), dl.Body["subject"], "recorded under the subject it was sent to")
	assert.Contains(t, dl.Body["reason"], "decode")
	assert.Equal(t, base64.StdEncoding.EncodeToString(poison), dl.Body["data"])
	assert.Equal(t, true, dl.Body["redrivable"])

	// The inbox is a work queue, whose consumed commands are gone: watch the subject instead.
	sub, err := js.Conn().SubscribeSync(events.InboxSubject(execution))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, js.Conn().Flush())
	r := do(t, srv, "POST", "/v1/deadletter/"+id+"/redrive", "")
	require.Equal(t, http.StatusAccepted, r.Status, r.Raw)
	assert.Equal(t, streams.Inbox, r.Body["stream"])
	msg, err := sub.NextMsg(30 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, poison, msg.Data, "the original bytes, back on their subject")
	assert.Equal(t, "test", msg.Header.Get("X-Client"))
	assert.Equal(t, deadletter.RedriveMsgID(id), msg.Header.Get("Nats-Msg-Id"))

	// Still poison: the orchestrator dead-letters the copy, which names the dead letter it came from.
	list = pollGET(t, srv, "/v1/deadletter?source=orchestrator", func(r response) bool { return len(deadLetterIDs(t, r)) == 2 })
	again := deadLetterIDs(t, list)[0]
	require.NotEqual(t, id, again)
	copyDL := do(t, srv, "GET", "/v1/deadletter/"+again, "")
	assert.Equal(t, []any{id}, copyDL.Body["headers"].(map[string]any)[deadletter.HeaderRedriveOf])
	assert.Equal(t, dl.Body["data"], copyDL.Body["data"])
	pollGET(t, srv, "/v1/deadletter/"+id, func(r response) bool { return r.Body["redriven_at"] != nil })
}
