package metrics_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/internal/pgtest"
	"github.com/memmie/memmie/projections"
)

// histogram returns the sample count of the series of name with exactly the given labels.
func histogram(fams map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) == len(labels) {
			same := true
			for k, v := range labels {
				same = same && got[k] == v
			}
			if same {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// gather collects a registry's families as a scrape would.
func gather(t *testing.T, cs ...prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(cs...)
	fams, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// A real engine and Postgres: the execution histograms count the executions that ended, by
// workflow and status; the projections' lag is the whole stream before their runners run and
// 0 once they caught up; the executions by status are the table's.
func TestMetricsOfExecutionsAndProjections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	s := newStack(t, ctx, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	})
	js, reg, log := s.js, s.reg, s.log
	pool := pgtest.New(t)
	for id, endpoint := range map[string]string{"good": "/x", "bad": "/bad"} {
		w, err := definitions.ParseWorkflow(id+".yaml", []byte("id: "+id+"\nsteps: [{id: call, type: api_call, service: svc, endpoint: "+endpoint+"}]\n"))
		require.NoError(t, err)
		_, err = reg.Register(ctx, w)
		require.NoError(t, err)
	}

	durations := metrics.NewExecutions()
	eng := s.openEngine(t, ctx, engine.Config{Orchestrator: orchestrator.Config{Observer: durations}})

	var runners []*projections.Runner
	for _, p := range []projections.Projection{projections.NewExecutions(nil), projections.NewQueued(nil),
		projections.NewSteps(nil), projections.NewDefinitions(nil)} {
		r, err := projections.NewRunner(p, projections.Config{Pool: pool, JS: js, Log: log, BatchWait: time.Millisecond})
		require.NoError(t, err)
		runners = append(runners, r)
	}
	projs, err := metrics.NewProjections(metrics.ProjectionsConfig{JS: js, Runners: runners, Tables: views.New(pool),
		Timeout: 10 * time.Second, CacheFor: time.Nanosecond})
	require.NoError(t, err)

	var ids []string
	for _, wf := range []string{"good", "good", "bad"} {
		id, _, err := eng.Start(ctx, engine.StartRequest{WorkflowID: wf, Input: json.RawMessage(`{}`)})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for _, id := range ids {
		require.Eventually(t, func() bool {
			s, err := eng.Execution(ctx, id)
			return err == nil && s.Status.Terminal()
		}, 60*time.Second, 20*time.Millisecond, "execution %s ends", id)
	}

	execs, err := js.Stream(ctx, streams.Executions)
	require.NoError(t, err)
	lastExec := execs.CachedInfo().State.LastSeq
	defs, err := js.Stream(ctx, streams.Definitions)
	require.NoError(t, err)
	lastDef := defs.CachedInfo().State.LastSeq

	fams := gather(t, durations, projs)
	for _, name := range []string{"memmie_execution_duration_seconds", "memmie_execution_run_duration_seconds"} {
		assert.Equal(t, uint64(2), histogram(fams, name, map[string]string{"workflow": "good", "status": "completed"}), name)
		assert.Equal(t, uint64(1), histogram(fams, name, map[string]string{"workflow": "bad", "status": "failed"}), name)
		assert.Len(t, fams[name].GetMetric(), 2, name)
	}
	// No runner has run: the lag is the whole stream, and its oldest message's age.
	for _, c := range []struct {
		projection, stream string
		last               uint64
	}{
		{"executions", streams.Executions, lastExec},
		{"queued_executions", streams.Executions, lastExec},
		{"execution_steps", streams.Executions, lastExec},
		{"definitions", streams.Definitions, lastDef},
	} {
		v, ok := value(fams, "memmie_projection_lag_messages", "projection", c.projection, "stream", c.stream)
		require.True(t, ok, c.projection)
		assert.Equal(t, float64(c.last), v, c.projection)
		v, ok = value(fams, "memmie_projection_lag_seconds", "projection", c.projection, "stream", c.stream)
		require.True(t, ok, c.projection)
		assert.Greater(t, v, 0.0, c.projection)
	}
	for _, s := range []execution.Status{execution.StatusCompleted, execution.StatusFailed, execution.StatusQueued} {
		v, ok := value(fams, "memmie_executions", "status", string(s))
		require.True(t, ok, s)
		assert.Equal(t, 0.0, v, "the table is empty: %s", s)
	}

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Go(func() { _ = r.Run(runCtx) })
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	caughtUp := func(fams map[string]*dto.MetricFamily) bool {
		for _, p := range []string{"executions", "queued_executions", "execution_steps", "definitions"} {
			if v, ok := value(fams, "memmie_projection_lag_messages", "projection", p); !ok || v != 0 {
				return false
			}
		}
		return true
	}
	require.Eventually(t, func() bool { return caughtUp(gather(t, projs)) }, 60*time.Second, 20*time.Millisecond,
		"the projections catch up")
	fams = gather(t, projs)
	for _, p := range []string{"executions", "queued_executions", "execution_steps", "definitions"} {
		v, _ := value(fams, "memmie_projection_lag_seconds", "projection", p)
		assert.Equal(t, 0.0, v, p)
	}
	for s, want := range map[execution.Status]float64{execution.StatusCompleted: 2, execution.StatusFailed: 1, execution.StatusQueued: 0} {
		v, _ := value(fams, "memmie_executions", "status", string(s))
		assert.Equal(t, want, v, s)
	}

	// Without the tables, the runners' own commits say the same.
	own, err := metrics.NewProjections(metrics.ProjectionsConfig{JS: js, Runners: runners})
	require.NoError(t, err)
	fams = gather(t, own)
	assert.True(t, caughtUp(fams), "lag from the runners' stats")
	assert.NotContains(t, fams, "memmie_executions", "no tables, no executions by status")
	for _, r := range runners {
		st := r.Stats()
		want := lastExec
		if st.Stream == streams.Definitions {
			want = lastDef
		}
		assert.Equal(t, want, st.Applied, st.Projection)
		assert.False(t, st.CommittedAt.IsZero(), st.Projection)
	}
}
