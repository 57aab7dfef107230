package events_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
)

var at = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// samples has one event of every registered type, with every field set.
func samples(t *testing.T) []events.Event {
	t.Helper()
	const ex = "0b7c9a8e-1f7c-4a53-9c39-0c4d6ad2e001"
	ref := events.AttemptRef{Run: 2, StepID: "load", Attempt: 3}
	req := events.Request{Service: "studio", Method: "POST", Path: "/blobs/b1", Body: map[string]any{"a": 1.0},
		TimeoutMS: 30000, IdempotencyKey: ex + "/load"}
	resp := events.Response{StatusCode: 503, Body: map[string]any{"e": "busy"}, ErrorKind: events.ErrorHTTP,
		Error: "HTTP 503", RetryAfterMS: 1500, DurationMS: 12}
	stepErr := events.StepError{Kind: events.ErrorHTTP, Message: "HTTP 503", StatusCode: 503}
	execErr := events.ExecutionError{Code: events.CodeStepFailed, Message: "step load failed", StepID: "load",
		Details: map[string]any{"x": "y"}}
	execData := []events.ExecutionData{
		&events.ExecutionQueued{ExecutionID: ex, WorkflowID: "wf", WorkflowRevision: 3,
			Workflow: json.RawMessage(`{"id":"wf","steps":[]}`), InputSchema: json.RawMessage(`{"id":"in"}`),
			OutputSchema: json.RawMessage(`null`), Input: map[string]any{"blob_id": "b1"}, Priority: 10,
			MaxRetries: 2, IdempotencyKey: "k", ProviderID: "p", BlobID: "b1", SourceEventID: "s", Seed: -42},
		&events.ExecutionStarted{ExecutionID: ex, Run: 2, Deadline: at.Add(time.Hour)},
		&events.StepScheduled{ExecutionID: ex, AttemptRef: ref, Request: req, Deadline: at.Add(time.Minute)},
		&events.StepReported{ExecutionID: ex, AttemptRef: ref, Response: resp},
		&events.StepSucceeded{ExecutionID: ex, AttemptRef: ref, Output: []any{"x", true, nil}},
		&events.StepFailed{ExecutionID: ex, AttemptRef: ref, Error: stepErr, Retryable: true},
		&events.StepRetryScheduled{ExecutionID: ex, AttemptRef: ref, Error: stepErr, NextAttempt: 4, DelayMS: 2000,
			DueAt: at.Add(2 * time.Second)},
		&events.StepSkipped{ExecutionID: ex, Run: 2, StepID: "load", Reason: "condition is false"},
		&events.CompensationScheduled{ExecutionID: ex, AttemptRef: ref, Request: req, Deadline: at},
		&events.CompensationReported{ExecutionID: ex, AttemptRef: ref, Response: resp},
		&events.CompensationSucceeded{ExecutionID: ex, AttemptRef: ref, Output: "ok"},
		&events.CompensationFailed{ExecutionID: ex, AttemptRef: ref, Error: stepErr},
		&events.CompensationRetryScheduled{ExecutionID: ex, AttemptRef: ref, Error: stepErr, NextAttempt: 4,
			DelayMS: 10, DueAt: at},
		&events.TimerFired{ExecutionID: ex, Kind: events.TimerStepTimeout, Run: 2, StepID: "load", Attempt: 3, DueAt: at},
		&events.ExecutionCompensating{ExecutionID: ex, Run: 2, Outcome: events.OutcomeFailed, Error: &execErr, Retryable: true},
		&events.ExecutionCompleted{ExecutionID: ex, Run: 2, Output: map[string]any{"n": 1.5}},
		&events.ExecutionFailed{ExecutionID: ex, Run: 2, Error: execErr, CompensationFailed: true, Retryable: true},
		&events.CancelRequested{ExecutionID: ex, Run: 2, Reason: "user"},
		&events.ExecutionCancelled{ExecutionID: ex, Run: 2, Reason: "user", CompensationFailed: true},
		&events.RetryRequested{ExecutionID: ex, Run: 2, Reason: "fixed"},
		&events.ExecutionRetryScheduled{ExecutionID: ex, Run: 2, Error: execErr, RetryCount: 1, DelayMS: 30000, DueAt: at},
		&events.ExecutionRequeued{ExecutionID: ex, Run: 3, RetryCount: 1, Manual: true},
		&events.DeltasRejected{ExecutionID: ex, Run: 1, BlobID: "b1", BlobVersion: 4, Item: "delta_operations[1]", Reason: "test failed"},
	}
	var out []events.Event
	for _, d := range execData {
		out = append(out, events.NewExecution(d, events.SourceCore, at))
	}
	other := []events.Data{
		&events.BlobEvent{Kind: events.BlobCreated, BlobID: "b1", UserID: "u1", ProviderIDs: []string{"p"},
			Content: json.RawMessage(`"text"`), Metadata: json.RawMessage(`{"type":"chapter"}`)},
		&events.BlobEvent{Kind: events.BlobUpdated, BlobID: "b1", Metadata: json.RawMessage(`{"status":"draft"}`)},
		&events.BlobEvent{Kind: events.BlobDeleted, BlobID: "b1", ProviderIDs: []string{}},
		&events.BlobEvent{Kind: events.BlobCreated, BlobID: "b2", UserID: "u1", Content: json.RawMessage(`1`),
			DerivedFrom: &events.Derivation{BlobID: "b1", ExecutionID: ex, Depth: 2}},
		&events.TriggerRequested{EventID: "e1", Kind: events.BlobUpdated,
			Event: events.BlobEvent{Kind: events.BlobUpdated, BlobID: "b1", Metadata: json.RawMessage(`{"status":"draft"}`)},
			Blob: events.BlobSnapshot{BlobID: "b1", UserID: "u1", Version: 2, Content: json.RawMessage(`"text"`),
				Metadata: json.RawMessage(`{"status":"draft"}`)}},
		&events.Delta{ID: "d2", BlobID: "b1", Version: 8, BaseVersion: 6, Type: events.DeltaMove, Path: "/metadata/b",
			From: "/metadata/a", Timestamp: at, Metadata: events.DeltaMetadata{ExecutionID: ex, UserID: "u1",
				DerivedFrom: &events.Derivation{BlobID: "b0", ExecutionID: ex, Depth: 1}}},
		&events.Delta{ID: "d1", BlobID: "b1", Version: 7, BaseVersion: 6, ProviderID: "p", Type: events.DeltaTransform,
			Path: "/content", OldValue: json.RawMessage(`"a"`), NewValue: json.RawMessage(`"b"`), Timestamp: at,
			Metadata: events.DeltaMetadata{WorkflowID: "wf", WorkflowRevision: 3, ExecutionID: ex, StepID: "load", SourceEventID: "s"}},
		&events.DefinitionRegistered{Kind: "workflow", ID: "wf", Revision: 3, Definition: json.RawMessage(`{"id":"wf"}`)},
		&events.DefinitionDeactivated{Kind: "schema", ID: "in", Revision: 2},
		&events.DeadLetter{Source: "blobs", Stream: "MEMMIE_BLOBS", Sequence: 9, Subject: "memmie.blobs.b1.updated",
			Headers: map[string][]string{"Nats-Msg-Id": {"m"}}, Data: []byte("{not json"), Reason: "blob does not exist"},
		&events.DeadLetterRedriven{DeadLetterID: "dl1", Source: "blobs", Subject: "memmie.blobs.b1.updated",
			Stream: "MEMMIE_BLOBS", Sequence: 12, MsgID: "m2"},
	}
	for i, d := range other {
		out = append(out, events.Event{ID: events.ID("test", string(rune('a'+i))), Source: events.SourceBlobs,
			Type: d.EventType(), Subject: "memmie.x", Time: at, Data: d})
	}
	return out
}

func TestRoundTripEveryType(t *testing.T) {
	seen := map[events.Type]bool{}
	for _, ev := range samples(t) {
		t.Run(string(ev.Type), func(t *testing.T) {
			b, err := events.Marshal(ev)
			require.NoError(t, err)
			got, err := events.Decode(b)
			require.NoError(t, err)
			assert.Equal(t, ev.ID, got.ID)
			assert.Equal(t, ev.Type, got.Type)
			assert.True(t, ev.Time.Equal(got.Time))
			again, err := events.Marshal(got)
			require.NoError(t, err)
			assert.JSONEq(t, string(b), string(again), "decode and encode again changes nothing")

			var env map[string]any
			require.NoError(t, json.Unmarshal(b, &env))
			for _, attr := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data", "dataschemaversion"} {
				assert.Contains(t, env, attr)
			}
			assert.Equal(t, "1.0", env["specversion"])
			assert.EqualValues(t, events.Version(ev.Type), env["dataschemaversion"])
		})
		seen[ev.Type] = true
	}
	for _, typ := range events.Types() {
		assert.True(t, seen[typ], "no sample of %s", typ)
	}
}

// Marshal writes the envelope by hand: its bytes must be those of json.Marshal of the
// Envelope, which the stored histories (and their deterministic bytes) were written with.
func TestMarshalWritesWhatJSONMarshalWrites(t *testing.T) {
	evs := samples(t)
	odd := evs[0]
	odd.ID, odd.Source, odd.Subject = `id "quoted" \ <b>&amp;`, "/sourcé/\u2028\x01", ""
	odd.Time = time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	evs = append(evs, odd)
	for _, ev := range evs {
		got, err := events.Marshal(ev)
		require.NoError(t, err)
		data, err := json.Marshal(ev.Data)
		require.NoError(t, err)
		want, err := json.Marshal(events.Envelope{SpecVersion: events.SpecVersion, ID: ev.ID, Source: ev.Source,
			Type: ev.Type, Subject: ev.Subject, Time: ev.Time.UTC(), DataContentType: events.DataContentType,
			DataSchemaVersion: events.Version(ev.Type), Data: data})
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), "%s", ev.Type)
	}
	bad := evs[0]
	bad.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := events.Marshal(bad)
	assert.Error(t, err, "a time json.Marshal refuses")
}

func TestExecutionEventsHaveDeterministicIDsAndSubjects(t *testing.T) {
	a := events.NewExecution(&events.StepSucceeded{ExecutionID: "e1", AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 2}}, events.SourceCore, at)
	b := events.NewExecution(&events.StepSucceeded{ExecutionID: "e1", AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 2},
		Output: "different"}, events.SourceCore, at.Add(time.Hour))
	failed := events.NewExecution(&events.StepFailed{ExecutionID: "e1", AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 2}}, events.SourceCore, at)
	next := events.NewExecution(&events.StepSucceeded{ExecutionID: "e1", AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 3}}, events.SourceCore, at)
	otherRun := events.NewExecution(&events.StepSucceeded{ExecutionID: "e1", AttemptRef: events.AttemptRef{Run: 2, StepID: "s", Attempt: 2}}, events.SourceCore, at)
	otherExec := events.NewExecution(&events.StepSucceeded{ExecutionID: "e2", AttemptRef: events.AttemptRef{Run: 1, StepID: "s", Attempt: 2}}, events.SourceCore, at)

	assert.Equal(t, a.ID, b.ID, "a re-decided result keeps its id")
	assert.Equal(t, a.ID, failed.ID, "every result of one attempt fills one slot")
	assert.NotEqual(t, a.ID, next.ID)
	assert.NotEqual(t, a.ID, otherRun.ID)
	assert.NotEqual(t, a.ID, otherExec.ID)
	assert.Equal(t, "memmie.executions.e1.step.succeeded", a.Subject)
	assert.Equal(t, "e1", a.ExecutionID())
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, a.ID, "a UUIDv5")

	completed := events.NewExecution(&events.ExecutionCompleted{ExecutionID: "e1", Run: 1}, events.SourceCore, at)
	cancelled := events.NewExecution(&events.ExecutionCancelled{ExecutionID: "e1", Run: 1}, events.SourceCore, at)
	assert.Equal(t, completed.ID, cancelled.ID, "one end per run")
}

func TestDecodeRejects(t *testing.T) {
	valid := events.NewExecution(&events.CancelRequested{ExecutionID: "e1", Reason: "r"}, events.SourceAPI, at)
	b, err := events.Marshal(valid)
	require.NoError(t, err)
	var env map[string]any
	require.NoError(t, json.Unmarshal(b, &env))
	with := func(change func(m map[string]any)) []byte {
		m := map[string]any{}
		for k, v := range env {
			m[k] = v
		}
		data := map[string]any{}
		for k, v := range env["data"].(map[string]any) {
			data[k] = v
		}
		m["data"] = data
		change(m)
		out, err := json.Marshal(m)
		require.NoError(t, err)
		return out
	}

	tests := []struct {
		name  string
		input []byte
		want  string
	}{
		{"not json", []byte("{"), "envelope"},
		{"too large", []byte(`{"pad":"` + strings.Repeat("x", events.MaxEventSize) + `"}`), "exceed"},
		{"wrong specversion", with(func(m map[string]any) { m["specversion"] = "0.3" }), "specversion"},
		{"no id", with(func(m map[string]any) { delete(m, "id") }), "id and source"},
		{"unknown type", with(func(m map[string]any) { m["type"] = "memmie.execution.exploded" }), "unknown event type"},
		{"go type name", with(func(m map[string]any) { m["type"] = "CancelRequested" }), "unknown event type"},
		{"newer version", with(func(m map[string]any) { m["dataschemaversion"] = 2 }), "this build reads 1 to 1"},
		{"missing version", with(func(m map[string]any) { delete(m, "dataschemaversion") }), "dataschemaversion 0"},
		{"unknown field", with(func(m map[string]any) { m["data"].(map[string]any)["reson"] = "typo" }), `unknown field "reson"`},
		{"wrong field type", with(func(m map[string]any) { m["data"].(map[string]any)["run"] = "one" }), "data"},
		{"null data", with(func(m map[string]any) { m["data"] = nil }), "missing"},
		{"no execution id", with(func(m map[string]any) { delete(m["data"].(map[string]any), "execution_id") }), "execution_id: empty"},
		{"execution id with a dot", with(func(m map[string]any) { m["data"].(map[string]any)["execution_id"] = "a.b" }), "execution_id"},
		{"wrong content type", with(func(m map[string]any) { m["datacontenttype"] = "text/plain" }), "datacontenttype"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Decode(tt.input)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	t.Run("extension attributes are ignored", func(t *testing.T) {
		ev, err := events.Decode(with(func(m map[string]any) { m["traceparent"] = "00-abc" }))
		require.NoError(t, err)
		assert.Equal(t, "r", ev.Data.(*events.CancelRequested).Reason)
	})
}

func TestMarshalRejects(t *testing.T) {
	ev := events.NewExecution(&events.CancelRequested{ExecutionID: "e1"}, events.SourceAPI, at)
	ev.Type = events.TypeExecutionCancelled
	_, err := events.Marshal(ev)
	assert.ErrorContains(t, err, "data of type memmie.execution.cancel_requested in an event of type memmie.execution.cancelled")

	_, err = events.Marshal(events.Event{ID: "x", Type: events.TypeBlobCreated, Data: &events.BlobEvent{BlobID: "b"}})
	assert.ErrorContains(t, err, "data of type  in an event", "a blob event needs its kind")

	big := events.NewExecution(&events.StepSucceeded{ExecutionID: "e1", Output: strings.Repeat("x", events.MaxEventSize)}, events.SourceCore, at)
	_, err = events.Marshal(big)
	assert.ErrorContains(t, err, "exceed the limit")
}

// A report stored at data schema version 1 (nested error, Retry-After in seconds) reads as
// today's shape.
func TestUpcastReportFromVersion1(t *testing.T) {
	v1 := `{"specversion":"1.0","id":"3f1c","source":"/memmie/runner","type":"memmie.execution.step.reported",
		"subject":"memmie.executions.e1.step.reported","time":"2026-01-02T03:04:05Z",
		"datacontenttype":"application/json","dataschemaversion":1,
		"data":{"execution_id":"e1","run":1,"step_id":"load","attempt":2,"status_code":429,
			"body":{"big":12345678901234567890},"error":{"kind":"http","message":"HTTP 429"},
			"retry_after_seconds":1.5,"duration_ms":40}}`
	ev, err := events.Decode([]byte(v1))
	require.NoError(t, err)
	r := ev.Data.(*events.StepReported)
	assert.Equal(t, events.AttemptRef{Run: 1, StepID: "load", Attempt: 2}, r.AttemptRef)
	assert.Equal(t, events.ErrorHTTP, r.ErrorKind)
	assert.Equal(t, "HTTP 429", r.Error)
	assert.Equal(t, int64(1500), r.RetryAfterMS)
	assert.Equal(t, 429, r.StatusCode)
	assert.Equal(t, int64(40), r.DurationMS)

	b, err := events.Marshal(ev)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"dataschemaversion":2`, "it is written back at the current version")

	compensation := strings.ReplaceAll(v1, "step.reported", "compensation.reported")
	compensation = strings.Replace(compensation, `"error":{"kind":"http","message":"HTTP 429"},`, `"error":null,`, 1)
	ev, err = events.Decode([]byte(compensation))
	require.NoError(t, err)
	assert.Equal(t, events.ErrorKind(""), ev.Data.(*events.CompensationReported).ErrorKind)

	bad := strings.Replace(v1, `"retry_after_seconds":1.5`, `"retry_after_seconds":"soon"`, 1)
	_, err = events.Decode([]byte(bad))
	assert.ErrorContains(t, err, "upcast memmie.execution.step.reported from version 1: retry_after_seconds: want a number")
}

func TestTypesAreExplicitAndClassified(t *testing.T) {
	inputs := 0
	for _, typ := range events.Types() {
		assert.True(t, strings.HasPrefix(string(typ), "memmie."), typ)
		assert.Equal(t, strings.ToLower(string(typ)), string(typ))
		if typ.IsInput() {
			inputs++
			assert.True(t, typ.IsExecution(), "%s is an input, so an execution event", typ)
		}
		if typ.IsExecution() {
			assert.True(t, strings.HasPrefix(string(typ), "memmie.execution."), typ)
		}
	}
	assert.Equal(t, 8, inputs)
}

func FuzzDecode(f *testing.F) {
	for _, ev := range samples(&testing.T{}) {
		b, err := events.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"memmie.execution.step.reported","dataschemaversion":1,"data":{"error":{"kind":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := events.Decode(b)
		if err != nil {
			return
		}
		// What decodes encodes, and reads back the same.
		again, err := events.Marshal(ev)
		if err != nil {
			if strings.Contains(err.Error(), "exceed the limit") {
				return // upcasting or re-encoding may grow an event that was near the limit
			}
			t.Fatalf("marshal a decoded event: %v", err)
		}
		ev2, err := events.Decode(again)
		if err != nil {
			t.Fatalf("decode a re-encoded event: %v", err)
		}
		third, err := events.Marshal(ev2)
		if err != nil || string(third) != string(again) {
			t.Fatalf("not stable: %s\n%s", again, third)
		}
	})
}
