package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a server with the definitions stream and returns its client URL and a
// JetStream context.
func setup(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv, _, js := natstest.Run(t)
	cfg, err := streams.Config(streams.Definitions, streams.Options{Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	require.NoError(t, stream.EnsureStreams(testContext(t), js, []jetstream.StreamConfig{cfg}))
	return srv.ClientURL(), js
}

// connect opens another connection, as another process would.
func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func start(t *testing.T, js jetstream.JetStream) *registry.Registry {
	t.Helper()
	reg, err := registry.New(js, registry.Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)
	require.NoError(t, reg.Start(testContext(t)))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	return reg
}

func loadExamples(t *testing.T) *definitions.Set {
	t.Helper()
	set, err := definitions.Load("../../definitions")
	require.NoError(t, err)
	return set
}

func parseWorkflow(t *testing.T, src string) *definitions.Workflow {
	t.Helper()
	w, err := definitions.ParseWorkflow("test.yaml", []byte(src))
	require.NoError(t, err)
	return w
}

// summary describes revisions by what every process must agree on.
func summary(revs []registry.Revision) []string {
	var out []string
	for _, r := range revs {
		out = append(out, fmt.Sprintf("%s %s r%d active=%t seq=%d %s", r.Kind, r.ID, r.Revision, r.Active, r.Seq, r.Canonical))
	}
	return out
}

func TestRegisterExamplesThenNoOpThenNewRevision(t *testing.T) {
	_, js := setup(t)
	reg := start(t, js)
	ctx := testContext(t)
	set := loadExamples(t)
	total := len(set.Schemas) + len(set.Workflows) + len(set.Providers)

	results, err := reg.RegisterSet(ctx, set)
	require.NoError(t, err)
	require.Len(t, results, total)
	var kinds []definitions.Kind
	for _, res := range results {
		assert.True(t, res.Changed, res.ID)
		assert.True(t, res.Active, res.ID)
		assert.Equal(t, 1, res.Revision, res.ID)
		if len(kinds) == 0 || kinds[len(kinds)-1] != res.Kind {
			kinds = append(kinds, res.Kind)
		}
	}
	assert.Equal(t, []definitions.Kind{definitions.KindSchema, definitions.KindWorkflow, definitions.KindProvider}, kinds,
		"schemas, then workflows, then providers")
	assert.EqualValues(t, total, reg.Seq(), "one event per definition")

	for _, w := range set.Workflows {
		rev, ok := reg.Current(definitions.KindWorkflow, w.ID)
		require.True(t, ok, w.ID)
		assert.True(t, rev.Active)
		got := rev.Def.(*definitions.Workflow)
		require.NotNil(t, got.Compiled, "the view holds compiled workflows")
		want, err := definitions.Canonical(w)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(rev.Canonical))
		again, err := definitions.Canonical(got)
		require.NoError(t, err)
		assert.Equal(t, string(rev.Canonical), string(again), "canonical JSON survives the round trip")
	}
	assert.Len(t, reg.List(definitions.KindSchema), len(set.Schemas))
	assert.Len(t, reg.List(definitions.KindProvider), len(set.Providers))

	t.Run("registering the same set again is a no-op", func(t *testing.T) {
		before := reg.Seq()
		results, err := reg.RegisterSet(ctx, loadExamples(t))
		require.NoError(t, err)
		require.Len(t, results, total)
		for _, res := range results {
			assert.False(t, res.Changed, res.ID)
			assert.Equal(t, 1, res.Revision, res.ID)
		}
		assert.Equal(t, before, reg.Seq(), "nothing was appended")
	})

	t.Run("a changed definition becomes revision 2 and revision 1 is still served", func(t *testing.T) {
		w := loadExamples(t).Workflow("blob_summary")
		require.NotNil(t, w)
		old, ok := reg.Current(definitions.KindWorkflow, w.ID)
		require.True(t, ok)
		w.Description = "changed"

		results, err := reg.Register(ctx, w)
		require.NoError(t, err)
		require.Equal(t, []registry.Result{{Kind: definitions.KindWorkflow, ID: w.ID, Revision: 2, Changed: true, Active: true}}, results)

		cur, ok := reg.Current(definitions.KindWorkflow, w.ID)
		require.True(t, ok)
		assert.Equal(t, 2, cur.Revision)
		assert.Equal(t, "changed", cur.Def.(*definitions.Workflow).Description)
		first, ok := reg.Get(definitions.KindWorkflow, w.ID, 1)
		require.True(t, ok)
		assert.Equal(t, old.Canonical, first.Canonical)
		assert.False(t, first.Active, "only the current revision is active")
		_, ok = reg.Get(definitions.KindWorkflow, w.ID, 3)
		assert.False(t, ok)
		assert.Len(t, reg.History(definitions.KindWorkflow, w.ID), 2)
	})

	t.Run("another process sees every revision, from the stream", func(t *testing.T) {
		other := start(t, js)
		for _, kind := range []definitions.Kind{definitions.KindSchema, definitions.KindWorkflow, definitions.KindProvider} {
			assert.Equal(t, summary(reg.List(kind)), summary(other.List(kind)), kind)
		}
		rev, ok := other.Get(definitions.KindWorkflow, "blob_summary", 1)
		require.True(t, ok)
		assert.NotEqual(t, "changed", rev.Def.(*definitions.Workflow).Description)
	})
}

func TestInvalidSetRegistersNothing(t *testing.T) {
	_, js := setup(t)
	reg := start(t, js)
	ctx := testContext(t)
	good := loadExamples(t)

	tests := []struct {
		name   string
		defs   func() []definitions.Definition
		fields []string // the fields of the problems, in order
		file   string   // the File of the first problem
	}{
		{
			name: "a workflow naming an unknown schema",
			defs: func() []definitions.Definition {
				w := parseWorkflow(t, "id: wf\ninput_schema_id: nope\nsteps: [{id: a, type: transform, input_map: {x: 1}}]\n")
				return []definitions.Definition{good.Schemas[0], w}
			},
			fields: []string{"input_schema_id"},
			file:   "workflows/wf",
		},
		{
			name: "a provider naming an unknown workflow",
			defs: func() []definitions.Definition {
				p := loadExamples(t).Provider("book-writer")
				return []definitions.Definition{good.Schemas[0], p}
			},
			fields: []string{"workflows[0].workflow_id", "workflows[1].workflow_id"},
			file:   "providers/book-writer",
		},
		{
			name: "the same id twice",
			defs: func() []definitions.Definition {
				return []definitions.Definition{good.Schemas[0], good.Schemas[0]}
			},
			fields: []string{"id"},
		},
		{
			name: "a workflow that does not compile",
			defs: func() []definitions.Definition {
				w := &definitions.Workflow{ID: "broken", Steps: []definitions.Step{{ID: "a", Type: "teleport"}}}
				return []definitions.Definition{good.Schemas[0], w}
			},
			fields: []string{"steps[0].type"},
			file:   "workflows/broken",
		},
		{
			name: "an id that cannot be a subject token",
			defs: func() []definitions.Definition {
				return []definitions.Definition{&definitions.Schema{ID: "a.b", Definition: map[string]any{}}}
			},
			fields: []string{"id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			results, err := reg.Register(ctx, tt.defs()...)
			var probs definitions.Problems
			require.ErrorAs(t, err, &probs)
			assert.Empty(t, results)
			var fields []string
			for _, p := range probs {
				fields = append(fields, p.Field)
			}
			assert.Equal(t, tt.fields, fields, probs.Error())
			if tt.file != "" {
				assert.Equal(t, tt.file, probs[0].File)
			}
			assert.Zero(t, reg.Seq(), "nothing was appended")
			assert.Empty(t, reg.List(definitions.KindSchema))
		})
	}
}

func TestSingleWorkflowIsCheckedAgainstTheRegisteredSet(t *testing.T) {
	_, js := setup(t)
	reg := start(t, js)
	ctx := testContext(t)
	_, err := reg.RegisterSet(ctx, loadExamples(t))
	require.NoError(t, err)

	w := parseWorkflow(t, `id: new_wf
input_schema_id: blob_input_schema_v1
output_schema_id: blob_output_schema_v1
steps: [{id: a, type: transform, input_map: {delta_operations: []}}]
`)
	results, err := reg.Register(ctx, w)
	require.NoError(t, err, "the schemas are registered already")
	assert.Equal(t, 1, results[0].Revision)

	swapped := parseWorkflow(t, `id: wrong_wf
input_schema_id: blob_output_schema_v1
steps: [{id: a, type: transform, input_map: {x: 1}}]
`)
	_, err = reg.Register(ctx, swapped)
	var probs definitions.Problems
	require.ErrorAs(t, err, &probs)
	assert.Contains(t, probs.Error(), "workflows/wrong_wf")
	assert.Contains(t, probs.Error(), "not an input schema")

	t.Run("a schema change that breaks a registered workflow is refused", func(t *testing.T) {
		s := loadExamples(t).Schema("blob_input_schema_v1")
		s.Type = definitions.SchemaOutput
		_, err := reg.Register(ctx, s)
		var probs definitions.Problems
		require.ErrorAs(t, err, &probs)
		assert.Contains(t, probs.Error(), "workflows/blob_summary: input_schema_id:")
		rev, _ := reg.Current(definitions.KindSchema, s.ID)
		assert.Equal(t, 1, rev.Revision)
	})
}

func TestDeactivate(t *testing.T) {
	_, js := setup(t)
	reg := start(t, js)
	ctx := testContext(t)
	_, err := reg.RegisterSet(ctx, loadExamples(t))
	require.NoError(t, err)

	_, err = reg.Deactivate(ctx, definitions.KindWorkflow, "blob_summary")
	var inUse *registry.InUseError
	require.ErrorAs(t, err, &inUse, "the blob-summary provider binds it")
	assert.ErrorIs(t, err, registry.ErrInUse)
	assert.Equal(t, []string{`provider "blob-summary"`}, inUse.By)

	_, err = reg.Deactivate(ctx, definitions.KindSchema, "nope")
	assert.ErrorIs(t, err, registry.ErrNotFound)

	res, err := reg.Deactivate(ctx, definitions.KindProvider, "blob-summary")
	require.NoError(t, err)
	assert.Equal(t, registry.Result{Kind: definitions.KindProvider, ID: "blob-summary", Revision: 1, Changed: true}, res)
	res, err = reg.Deactivate(ctx, definitions.KindWorkflow, "blob_summary")
	require.NoError(t, err)
	assert.True(t, res.Changed)

	rev, ok := reg.Current(definitions.KindWorkflow, "blob_summary")
	require.True(t, ok, "a deactivated definition keeps its history")
	assert.False(t, rev.Active)
	assert.Equal(t, 1, rev.Revision)

	again, err := reg.Deactivate(ctx, definitions.KindWorkflow, "blob_summary")
	require.NoError(t, err)
	assert.False(t, again.Changed, "deactivating twice is a no-op")

	t.Run("a provider cannot bind a deactivated workflow", func(t *testing.T) {
		_, err := reg.Register(ctx, loadExamples(t).Provider("blob-summary"))
		var probs definitions.Problems
		require.ErrorAs(t, err, &probs)
		assert.Contains(t, probs.Error(), `unknown workflow "blob_summary"`)
	})

	t.Run("registering the same definition again reactivates it as a new revision", func(t *testing.T) {
		results, err := reg.Register(ctx, loadExamples(t).Workflow("blob_summary"))
		require.NoError(t, err)
		assert.Equal(t, registry.Result{Kind: definitions.KindWorkflow, ID: "blob_summary", Revision: 2, Changed: true, Active: true}, results[0])
		rev, _ := reg.Current(definitions.KindWorkflow, "blob_summary")
		assert.True(t, rev.Active)
		assert.Equal(t, 2, rev.Revision)
	})

	t.Run("a restarted view replays deactivations", func(t *testing.T) {
		other := start(t, js)
		p, ok := other.Current(definitions.KindProvider, "blob-summary")
		require.True(t, ok)
		assert.False(t, p.Active)
		w, _ := other.Current(definitions.KindWorkflow, "blob_summary")
		assert.True(t, w.Active)
	})
}

// Two processes register different contents for one id at once: the stream keeps both, as
// revisions 1 and 2, whichever wins the race.
func TestRacingRegistrarsLoseNoUpdate(t *testing.T) {
	url, js := setup(t)
	ctx := testContext(t)
	const rounds = 5
	regs := []*registry.Registry{start(t, js), start(t, connect(t, url))}

	for round := range rounds {
		id := fmt.Sprintf("race%d", round)
		var wg sync.WaitGroup
		errs := make([]error, len(regs))
		for i, reg := range regs {
			wg.Go(func() {
				s := &definitions.Schema{ID: id, Description: fmt.Sprintf("writer %d", i), Definition: map[string]any{"type": "object"}}
				_, errs[i] = reg.Register(ctx, s)
			})
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))

		for _, reg := range regs {
			require.NoError(t, reg.Sync(ctx))
			hist := reg.History(definitions.KindSchema, id)
			require.Len(t, hist, 2, id)
			assert.Equal(t, 1, hist[0].Revision)
			assert.Equal(t, 2, hist[1].Revision)
			descs := []string{hist[0].Def.(*definitions.Schema).Description, hist[1].Def.(*definitions.Schema).Description}
			assert.ElementsMatch(t, []string{"writer 0", "writer 1"}, descs)
		}
	}
	msgs, err := stream.Load(ctx, js, streams.Definitions, events.SubjectDefinitions)
	require.NoError(t, err)
	assert.Len(t, msgs, 2*rounds)
}

func TestWaitForAndReady(t *testing.T) {
	_, js := setup(t)
	reg, err := registry.New(js, registry.Config{})
	require.NoError(t, err)
	ctx := testContext(t)
	assert.ErrorIs(t, reg.Ready(ctx), registry.ErrNotStarted)
	require.NoError(t, reg.Start(ctx))
	require.NoError(t, reg.Ready(ctx))

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, reg.WaitFor(short, 1), context.DeadlineExceeded, "nothing was written")

	require.NoError(t, reg.Stop(ctx))
	assert.ErrorIs(t, reg.Ready(ctx), registry.ErrNotStarted)
	assert.ErrorIs(t, reg.WaitFor(ctx, 1), registry.ErrNotStarted)

	_, err = registry.New(nil, registry.Config{})
	assert.Error(t, err)
}

func TestStartFailsWithoutStream(t *testing.T) {
	_, _, js := natstest.Run(t)
	reg, err := registry.New(js, registry.Config{})
	require.NoError(t, err)
	assert.Error(t, reg.Start(testContext(t)))
}

// The view survives a restart of the server: it replays the file store, and it follows
// registrations made after the restart.
func TestViewFollowsAcrossServerRestart(t *testing.T) {
	srv, _, js := natstest.Run(t)
	ctx := testContext(t)
	require.NoError(t, stream.EnsureStreams(ctx, js, []jetstream.StreamConfig{mustConfig(t)}))
	reg := start(t, js)
	_, err := reg.Register(ctx, &definitions.Schema{ID: "before", Definition: map[string]any{}})
	require.NoError(t, err)

	srv = natstest.Restart(t, srv)
	other := start(t, connect(t, srv.ClientURL()))
	_, ok := other.Current(definitions.KindSchema, "before")
	require.True(t, ok, "replayed from the file store")
	_, err = other.Register(ctx, &definitions.Schema{ID: "after", Definition: map[string]any{}})
	require.NoError(t, err)

	require.NoError(t, reg.WaitFor(ctx, other.Seq()), "the first view follows the stream again")
	_, ok = reg.Current(definitions.KindSchema, "after")
	assert.True(t, ok)
	require.NoError(t, reg.Ready(ctx))
}

func mustConfig(t *testing.T) jetstream.StreamConfig {
	cfg, err := streams.Config(streams.Definitions, streams.Options{})
	require.NoError(t, err)
	return cfg
}
