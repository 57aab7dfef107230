package triggers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/core/trigger"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
)

const waitFor = 30 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// notes starts summarize on every blob, and strict, whose input schema wants a user_id (see
// env.prepare), on every blob of type strict.
const notes = `
provider:
  id: notes
workflows:
  - workflow_id: summarize
    priority: 7
    triggers:
      - event: onCreate
      - event: onUpdate
  - workflow_id: strict
    triggers:
      - event: onCreate
        conditions:
          - field: metadata.type
            operator: eq
            value: strict
`

type env struct {
	t   *testing.T
	js  jetstream.JetStream
	nc  *nats.Conn
	cfg triggers.Config
	// prepared counts the Prepare calls; panicOnce makes the first one panic, panicAlways
	// every one.
	prepared    atomic.Int64
	panicOnce   atomic.Bool
	panicAlways atomic.Bool
}

func newEnv(t *testing.T) *env {
	_, nc, js := natstest.Run(t)
	cfgs := append(streams.Configs(streams.Options{}), streams.TriggersConfig(streams.Options{}))
	require.NoError(t, stream.EnsureStreams(testContext(t), js, cfgs))
	def, err := definitions.Parse("notes.yaml", []byte(notes), "")
	require.NoError(t, err)
	providers := []*definitions.Provider{def.(*definitions.Provider)}
	e := &env{t: t, js: js, nc: nc}
	e.cfg = triggers.Config{
		Providers:    func() []*definitions.Provider { return providers },
		DeadLetter:   deadletter.NewWriter(js, deadletter.Config{}),
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		RetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond,
	}
	e.cfg.Prepare = e.prepare
	return e
}

// prepare stands in for the engine's: the queued event of the start, refused for strict
// without a user_id.
func (e *env) prepare(_ context.Context, s trigger.Start) (stream.Msg, error) {
	e.prepared.Add(1)
	if e.panicOnce.CompareAndSwap(true, false) || e.panicAlways.Load() {
		panic("prepare: injected panic")
	}
	if s.WorkflowID == "strict" && s.Input["user_id"] == nil {
		return stream.Msg{}, fmt.Errorf("%w: input of workflow strict is invalid: /user_id: required", triggers.ErrUnstartable)
	}
	ev := events.NewExecution(&events.ExecutionQueued{ExecutionID: s.ExecutionID, WorkflowID: s.WorkflowID, Input: s.Input,
		Priority: s.Priority, ProviderID: s.ProviderID, BlobID: s.BlobID, SourceEventID: s.SourceEventID,
		BaseVersion: s.BaseVersion, Trigger: s.Trigger}, events.SourceTriggers, time.Now())
	data, err := events.Marshal(ev)
	if err != nil {
		return stream.Msg{}, err
	}
	return stream.Msg{Subject: ev.Subject, Data: data, ID: ev.ID}, nil
}

func (e *env) start() *triggers.Matcher {
	m, err := triggers.New(e.js, e.cfg)
	require.NoError(e.t, err)
	require.NoError(e.t, m.Start(testContext(e.t)))
	e.t.Cleanup(func() { require.NoError(e.t, m.Stop(context.Background())) })
	return m
}

// request appends the trigger request of a blob event (data as JSON) recorded as version
// of the blob, with metadata, under msgID (the writer's id when empty).
func (e *env) request(blobID, eventID string, kind events.BlobKind, version int64, metadata string, derived *events.Derivation, msgID string) {
	e.t.Helper()
	subject, err := events.TriggerSubject(blobID)
	require.NoError(e.t, err)
	id := events.TriggerRequestID(blobID, eventID)
	data, err := events.Marshal(events.Event{ID: id, Source: events.SourceBlobs, Type: events.TypeTriggerRequested,
		Subject: subject, Time: time.Now(), Data: &events.TriggerRequested{
			EventID: eventID, Kind: kind,
			Event: events.BlobEvent{BlobID: blobID, Metadata: json.RawMessage(metadata), DerivedFrom: derived},
			Blob: events.BlobSnapshot{BlobID: blobID, Version: version, Content: json.RawMessage(`null`),
				Metadata: json.RawMessage(metadata), DerivedFrom: derived},
		}})
	require.NoError(e.t, err)
	if msgID == "" {
		msgID = id
	}
	_, err = stream.Append(testContext(e.t), e.js, streams.Triggers, []stream.Msg{{Subject: subject, Data: data, ID: msgID,
		Header: nats.Header{events.HeaderCorrelationID: []string{eventID}}}}, stream.Expect{})
	require.NoError(e.t, err)
}

// queued returns the queued events on MEMMIE_EXECUTIONS, by execution id, with their
// messages' headers.
func (e *env) queued() map[string]*jetstream.RawStreamMsg {
	e.t.Helper()
	msgs, err := stream.Load(testContext(e.t), e.js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(e.t, err)
	out := map[string]*jetstream.RawStreamMsg{}
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(e.t, err)
		q := ev.Data.(*events.ExecutionQueued)
		require.NotContains(e.t, out, q.ExecutionID, "queued twice")
		out[q.ExecutionID] = &m
	}
	return out
}

func (e *env) waitQueued(n int) map[string]*jetstream.RawStreamMsg {
	e.t.Helper()
	var got map[string]*jetstream.RawStreamMsg
	require.Eventually(e.t, func() bool { got = e.queued(); return len(got) >= n }, waitFor, 20*time.Millisecond,
		"want %d queued executions", n)
	return got
}

// settled waits until the matcher's consumer holds no request.
func (e *env) settled(delivered uint64) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		c, err := e.js.Consumer(testContext(e.t), streams.Triggers, triggers.Name)
		if err != nil {
			return false
		}
		i := c.CachedInfo()
		return i.NumPending == 0 && i.NumAckPending == 0 && i.Delivered.Consumer >= delivered
	}, waitFor, 20*time.Millisecond)
}

func (e *env) deadLetters() []*events.DeadLetter {
	e.t.Helper()
	msgs, err := stream.Load(testContext(e.t), e.js, streams.DeadLetter, "memmie.deadletter."+triggers.Name)
	require.NoError(e.t, err)
	var out []*events.DeadLetter
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		require.NoError(e.t, err)
		out = append(out, ev.Data.(*events.DeadLetter))
	}
	return out
}

func queuedEvent(t *testing.T, m *jetstream.RawStreamMsg) *events.ExecutionQueued {
	ev, err := events.Decode(m.Data)
	require.NoError(t, err)
	return ev.Data.(*events.ExecutionQueued)
}

func TestRequestStartsItsExecutions(t *testing.T) {
	e := newEnv(t)
	m := e.start()
	e.request("b1", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	e.request("b1", "ev-2", events.BlobUpdated, 2, `{"type": "note", "status": "final"}`, nil, "")
	got := e.waitQueued(2)
	require.Len(t, got, 2)
	first := trigger.ExecutionID("b1", "ev-1", "notes", "summarize")
	require.Contains(t, got, first)
	q := queuedEvent(t, got[first])
	assert.Equal(t, "summarize", q.WorkflowID)
	assert.Equal(t, "b1", q.BlobID)
	assert.Equal(t, "ev-1", q.SourceEventID)
	assert.EqualValues(t, 1, q.BaseVersion)
	assert.Equal(t, "workflows[0].triggers[0]", q.Trigger)
	assert.Equal(t, 7, q.Priority)
	assert.EqualValues(t, 1, q.Input.(map[string]any)["blob"].(map[string]any)["version"])
	assert.Equal(t, "ev-1", got[first].Header.Get(events.HeaderCorrelationID), "the correlation id goes on")
	assert.NotEmpty(t, got[first].Header.Get(jetstream.MsgIDHeader))
	second := trigger.ExecutionID("b1", "ev-2", "notes", "summarize")
	require.Contains(t, got, second)
	assert.EqualValues(t, 2, queuedEvent(t, got[second]).BaseVersion)
	assert.Equal(t, "workflows[0].triggers[1]", queuedEvent(t, got[second]).Trigger)
	e.settled(2)
	st := m.Stats()
	assert.EqualValues(t, 2, st.Started)
	assert.Zero(t, st.DeadLettered)
	assert.Empty(t, e.deadLetters())
	assert.Equal(t, middleware.CorrelationIDMetadataKey, events.HeaderCorrelationID, "Watermill's key")
}

// The same request twice within the duplicate window is dropped by the stream; past it
// (another Nats-Msg-Id, the same content) it is handled and finds its execution queued.
func TestSameRequestTwiceStartsNothingNew(t *testing.T) {
	e := newEnv(t)
	m := e.start()
	e.request("b2", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	e.request("b2", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	e.waitQueued(1)
	e.settled(1)
	e.request("b2", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "past-the-window")
	e.settled(2)
	require.Eventually(t, func() bool { return m.Stats().Before == 1 }, waitFor, 20*time.Millisecond)
	// An execution queued before by other means (another Nats-Msg-Id on its queued event):
	// the append conflicts, which is "started before" too.
	other := trigger.ExecutionID("b2b", "ev-1", "notes", "summarize")
	_, err := e.js.Publish(testContext(t), "memmie.executions."+other+".queued", []byte(`{}`), jetstream.WithMsgID("queued-elsewhere"))
	require.NoError(t, err)
	e.request("b2b", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	e.settled(3)
	require.Eventually(t, func() bool { return m.Stats().Before == 2 }, waitFor, 20*time.Millisecond)
	msgs, err := stream.Load(testContext(t), e.js, streams.Executions, "memmie.executions.*.queued")
	require.NoError(t, err)
	assert.Len(t, msgs, 2, "one queued event per execution, however often it was asked for")
	assert.EqualValues(t, 1, m.Stats().Started)
	assert.Zero(t, m.Stats().Retried)
}

// An unstartable start (its input against the workflow's schema) dead-letters its request with
// the subject it was stored under and the reason; the request's other starts are made, an
// unreadable request is dead-lettered too, and the requests after them are processed.
func TestUnstartableAndUnreadableAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	m := e.start()
	// summarize and strict both match: strict is refused, summarize starts.
	e.request("b3", "ev-1", events.BlobCreated, 1, `{"type": "strict"}`, nil, "")
	_, err := e.js.Publish(testContext(t), "memmie.triggers.junk", []byte(`{"not": "a request"}`), jetstream.WithMsgID("junk-1"))
	require.NoError(t, err)
	e.request("b4", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	got := e.waitQueued(2)
	assert.Contains(t, got, trigger.ExecutionID("b3", "ev-1", "notes", "summarize"), "the request's other start is made")
	assert.Contains(t, got, trigger.ExecutionID("b4", "ev-1", "notes", "summarize"), "the next request is processed")
	e.settled(3)
	var letters []*events.DeadLetter
	require.Eventually(t, func() bool { letters = e.deadLetters(); return len(letters) == 2 }, waitFor, 20*time.Millisecond)
	bySubject := map[string]*events.DeadLetter{}
	for _, dl := range letters {
		bySubject[dl.Subject] = dl
	}
	dl := bySubject["memmie.triggers.b3"]
	require.NotNil(t, dl, "dead-lettered under the request's own subject: %v", letters)
	assert.Equal(t, triggers.Name, dl.Source)
	assert.Equal(t, streams.Triggers, dl.Stream)
	assert.NotZero(t, dl.Sequence)
	assert.Contains(t, dl.Reason, "start of workflow strict (provider notes)")
	assert.Contains(t, dl.Reason, "/user_id: required")
	assert.Equal(t, []string{"ev-1"}, dl.Headers[events.HeaderCorrelationID])
	ev, err := events.Decode(dl.Data)
	require.NoError(t, err, "the dead letter holds the request")
	assert.Equal(t, "b3", ev.Data.(*events.TriggerRequested).Event.BlobID)
	junk := bySubject["memmie.triggers.junk"]
	require.NotNil(t, junk)
	assert.Contains(t, junk.Reason, "unreadable trigger request")
	assert.Equal(t, `{"not": "a request"}`, string(junk.Data))
	// No strict execution; no retry of either.
	got = e.queued()
	assert.NotContains(t, got, trigger.ExecutionID("b3", "ev-1", "notes", "strict"))
	st := m.Stats()
	assert.EqualValues(t, 2, st.DeadLettered)
	assert.Zero(t, st.Retried, "dead-lettered, not retried")
}

// A request with a header given twice (Watermill's default unmarshaler returns nil for it, and
// its subscriber then panics the process) is processed.
func TestMultiValuedHeaderIsProcessed(t *testing.T) {
	e := newEnv(t)
	e.start()
	subject, id := "memmie.triggers.b5", events.TriggerRequestID("b5", "ev-1")
	data, err := events.Marshal(events.Event{ID: id, Source: events.SourceBlobs, Type: events.TypeTriggerRequested,
		Subject: subject, Time: time.Now(), Data: &events.TriggerRequested{EventID: "ev-1", Kind: events.BlobCreated,
			Event: events.BlobEvent{BlobID: "b5", Metadata: json.RawMessage(`{"type": "note"}`)},
			Blob:  events.BlobSnapshot{BlobID: "b5", Version: 1, Content: json.RawMessage(`null`), Metadata: json.RawMessage(`{"type": "note"}`)}}})
	require.NoError(t, err)
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Add("X-Trace", "a")
	msg.Header.Add("X-Trace", "b")
	_, err = e.js.PublishMsg(testContext(t), msg)
	require.NoError(t, err)
	got := e.waitQueued(1)
	assert.Contains(t, got, trigger.ExecutionID("b5", "ev-1", "notes", "summarize"))
}

// A panic in the handler is recovered by the router, and the request is delivered again (not
// lost, not dead-lettered).
func TestPanicIsRecoveredAndTheRequestRetried(t *testing.T) {
	e := newEnv(t)
	e.panicOnce.Store(true)
	m := e.start()
	e.request("b6", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	got := e.waitQueued(1)
	assert.Contains(t, got, trigger.ExecutionID("b6", "ev-1", "notes", "summarize"))
	assert.GreaterOrEqual(t, e.prepared.Load(), int64(2), "prepared again after the panic")
	assert.EqualValues(t, 1, m.Stats().Retried)
	assert.Empty(t, e.deadLetters())
}

// A request whose handler panics on every delivery is dead-lettered after MaxPanics of them;
// the requests after it are processed meanwhile.
func TestRequestPanickingEveryTimeIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxPanics = 3
	e.panicAlways.Store(true)
	m := e.start()
	e.request("b9", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	var letters []*events.DeadLetter
	require.Eventually(t, func() bool { letters = e.deadLetters(); return len(letters) == 1 }, waitFor, 20*time.Millisecond)
	assert.Equal(t, "memmie.triggers.b9", letters[0].Subject)
	assert.Contains(t, letters[0].Reason, "panicked on 3 deliveries: prepare: injected panic")
	assert.EqualValues(t, 3, e.prepared.Load())
	e.settled(3)
	assert.EqualValues(t, 2, m.Stats().Retried)
	assert.Empty(t, e.queued())
}

// With the executions' stream gone, a request is retried with the backoff, never
// dead-lettered, and its execution is queued once the stream is back.
func TestExecutionsUnavailableIsRetriedUntilBack(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	require.NoError(t, e.js.DeleteStream(ctx, streams.Executions))
	m := e.start()
	e.request("b7", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	require.Eventually(t, func() bool { return m.Stats().Retried >= 3 }, waitFor, 20*time.Millisecond)
	assert.Empty(t, e.deadLetters(), "a transient failure is never dead-lettered")
	cfg, err := streams.Config(streams.Executions, streams.Options{})
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(ctx, e.js, []jetstream.StreamConfig{cfg}))
	got := e.waitQueued(1)
	assert.Contains(t, got, trigger.ExecutionID("b7", "ev-1", "notes", "summarize"))
	assert.Empty(t, e.deadLetters())
}

// The derivation bound is the matcher's: with MaxDerivationDepth 1, a blob derived once
// triggers and one derived twice starts nothing.
func TestDerivationBoundStopsLoops(t *testing.T) {
	e := newEnv(t)
	e.cfg.Trigger = trigger.Config{MaxDerivationDepth: 1}
	m := e.start()
	e.request("deep", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, &events.Derivation{BlobID: "mid", ExecutionID: "x2", Depth: 2}, "")
	e.request("mid", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, &events.Derivation{BlobID: "top", ExecutionID: "x1", Depth: 1}, "")
	e.settled(2)
	got := e.waitQueued(1)
	assert.Len(t, got, 1)
	assert.Contains(t, got, trigger.ExecutionID("mid", "ev-1", "notes", "summarize"))
	assert.EqualValues(t, 1, m.Stats().Started)
	assert.Empty(t, e.deadLetters(), "past the bound is not an error")
}

// The router's handler metrics are registered on the registry the matcher is given, as
// /metrics serves it.
func TestRouterMetricsAreServed(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.cfg.Metrics = reg
	e.start()
	e.request("b8", "ev-1", events.BlobCreated, 1, `{"type": "note"}`, nil, "")
	e.waitQueued(1)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	var body string
	require.Eventually(t, func() bool {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `memmie_triggers_handler_execution_time_seconds_count{handler_name="triggers",success="true"}`)
	}, waitFor, 50*time.Millisecond, "metrics: %s", body)
	assert.Contains(t, body, "memmie_triggers_subscriber_messages_received_total")
	assert.Contains(t, body, "memmie_triggers_publish_time_seconds")
}

// TestStopWithRequestsInFlightLosesNothing stops and starts the matcher again and again while
// requests are being handed to the router: nothing is lost or started twice, and closing never
// sends on a closed channel (watermill-nats' subscriber did, which the race detector reported
// in a CI run of the engine's kill test; run with -race).
func TestStopWithRequestsInFlightLosesNothing(t *testing.T) {
	e := newEnv(t)
	e.cfg.AckWait = time.Second // what a stop hands back comes again soon
	const n = 600
	for i := range n {
		e.request(fmt.Sprintf("b%d", i), fmt.Sprintf("ev%d", i), events.BlobCreated, 1, `{}`, nil, "")
	}
	for round := range 10 {
		m, err := triggers.New(e.js, e.cfg)
		require.NoError(t, err)
		require.NoError(t, m.Start(testContext(t)))
		// Stopped while requests flow: some are being handed to the router.
		require.Eventually(t, func() bool { return m.Stats().Requests > 10 }, waitFor, time.Millisecond)
		stopCtx, cancel := context.WithTimeout(context.Background(), waitFor)
		require.NoError(t, m.Stop(stopCtx), "round %d", round)
		cancel()
	}
	e.start() // the last one runs on: it gets what the others handed back
	assert.Len(t, e.waitQueued(n), n)
	assert.Empty(t, e.deadLetters())
}
