package execution_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/execution"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the scenarios")

// golden is a recorded history: each input in stream order, the time it was decided at and the
// decisions it led to, then the final state.
type golden struct {
	Description string          `json:"description"`
	History     []goldenEntry   `json:"history"`
	State       json.RawMessage `json:"state"`
}

type goldenEntry struct {
	Now       time.Time         `json:"now"`
	Input     json.RawMessage   `json:"input"`
	Decisions []json.RawMessage `json:"decisions"`
}

// scenarios produce the golden histories when run with -update.
var scenarios = []struct {
	file, description, workflow string
	opts                        []queueOpt
	inputs                      []input
}{
	{
		file:        "success.json",
		description: "Three api_call steps run in order, each reading the last one's output, and the execution completes with the merge of their outputs.",
		workflow:    threeSteps,
		opts:        []queueOpt{withInput(map[string]any{"blob_id": "b1"})},
		inputs: []input{
			start(),
			ok("load", map[string]any{"content": "It was a dark night."}),
			ok("expand", map[string]any{"text": "It was a dark and stormy night.", "request_id": "r1"}),
			ok("save", map[string]any{"id": "b2"}),
		},
	},
	{
		file:        "saga_failure.json",
		description: "Step d fails three times (a 503, a timeout, a 500) and runs out of attempts: c, then a are compensated (b has no compensation), and the execution fails.",
		workflow:    strings.Replace(saga, "    endpoint: /d\n", "    endpoint: /d\n    retry: {max_attempts: 3, backoff_ms: 500}\n", 1),
		inputs: []input{
			start(),
			ok("a", map[string]any{"id": "a1"}),
			ok("b", map[string]any{"id": "b1"}),
			ok("c", map[string]any{"id": "c1"}),
			reply("d", 503, map[string]any{"error": "busy"}),
			fire(events.TimerStepRetry, "d"),
			fire(events.TimerStepTimeout, "d"),
			fire(events.TimerStepRetry, "d"),
			reply("d", 500, nil),
			compReply("c", 200),
			compReply("a", 204),
		},
	},
	{
		file:        "cancel.json",
		description: "A cancel arrives while save is in flight: nothing more is scheduled, save's late success is recorded and undone with expand, and the execution is cancelled. A report after the end is stale.",
		workflow:    threeSteps,
		opts:        []queueOpt{withInput(map[string]any{"blob_id": "b1"})},
		inputs: []input{
			start(),
			ok("load", map[string]any{"content": "c"}),
			ok("expand", map[string]any{"text": "t", "request_id": "r1"}),
			cancel(),
			ok("save", map[string]any{"id": "b2"}),
			compReply("save", 200),
			compReply("expand", 200),
			lateReply("save", 1, 200, map[string]any{"id": "b2"}),
		},
	},
	{
		file:        "manual_retry.json",
		description: "Step c fails with a 400; a is compensated and the execution fails. A manual retry starts run 2 from c: a runs again (it was compensated) under a new idempotency key, b's result is reused, and the execution completes.",
		workflow:    saga,
		inputs: []input{
			start(),
			ok("a", map[string]any{"id": "a1"}),
			ok("b", map[string]any{"id": "b1"}),
			reply("c", 400, map[string]any{"error": "invalid"}),
			compReply("a", 200),
			retry(),
			start(),
			ok("a", map[string]any{"id": "a2"}),
			ok("c", map[string]any{"id": "c2"}),
			ok("d", map[string]any{"done": true}),
		},
	},
	{
		file:        "deltas_rejected.json",
		description: "A transform completes the execution; its blob rejects the output (a test operation fails): the rejection is recorded, nothing is decided, and the execution stays completed.",
		workflow:    oneTransform,
		inputs:      []input{start(), rejectDeltas(0, "delta_operations[0]")},
	},
}

func TestGoldenHistories(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for _, sc := range scenarios {
			record(t, filepath.Join(dir, sc.file), sc.description, sc.workflow, sc.opts, sc.inputs)
		}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, len(scenarios), "one golden history per scenario")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { replay(t, file) })
	}
}

// replay feeds a recorded history's inputs to the core and checks every decision and the final
// state against the recording.
func replay(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	var g golden
	require.NoError(t, json.Unmarshal(b, &g))
	require.NotEmpty(t, g.History)

	var s execution.State
	for i, entry := range g.History {
		in, err := events.Decode(entry.Input)
		require.NoError(t, err, "input %d", i)
		require.True(t, in.Type.IsInput(), "input %d is a %s", i, in.Type)
		require.NoError(t, s.Apply(in), "input %d", i)
		out, err := execution.Decide(s, in, entry.Now)
		require.NoError(t, err, "input %d", i)
		require.Len(t, out, len(entry.Decisions), "decisions on input %d (%s): %v", i, in.Type, types(out))
		for j, ev := range out {
			got, err := events.Marshal(ev)
			require.NoError(t, err)
			assert.JSONEq(t, string(entry.Decisions[j]), string(got), "decision %d on input %d (%s)", j, i, in.Type)
			require.NoError(t, s.Apply(ev))
		}
	}
	assert.JSONEq(t, string(g.State), stateJSON(t, s), "final state")
}

func record(t *testing.T, file, description, workflow string, opts []queueOpt, inputs []input) {
	r := newRun(t, workflow, opts...)
	for _, in := range inputs {
		r.feed(in(r))
	}
	g := golden{Description: description, State: json.RawMessage(stateJSON(t, r.s))}
	for _, l := range r.log {
		e := goldenEntry{Now: l.now, Input: marshal(t, l.in), Decisions: []json.RawMessage{}}
		for _, d := range l.decisions {
			e.Decisions = append(e.Decisions, marshal(t, d))
		}
		g.History = append(g.History, e)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(g))
	require.NoError(t, os.WriteFile(file, buf.Bytes(), 0o644))
}

func marshal(t testing.TB, ev events.Event) json.RawMessage {
	b, err := events.Marshal(ev)
	require.NoError(t, err)
	return b
}
