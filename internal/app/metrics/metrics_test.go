package metrics_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/handlers/orchestrator"
	"github.com/memmie/memmie/handlers/reconciler"
	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/handlers/triggers"
	"github.com/memmie/memmie/internal/app/api"
	"github.com/memmie/memmie/internal/app/engine"
	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/internal/jetstream/consume"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/natsserver/natstest"
	"github.com/memmie/memmie/internal/registry"
	"github.com/memmie/memmie/internal/services"
)

// stack is what the tests of a real engine start from: an embedded server with memmie's
// streams in memory, a started registry, and a test service named svc.
type stack struct {
	log  *slog.Logger
	js   jetstream.JetStream
	opts streams.Options
	reg  *registry.Registry
	svcs *services.Registry
}

// newStack starts a stack whose service svc answers with handler.
func newStack(t *testing.T, ctx context.Context, handler http.HandlerFunc) *stack {
	t.Helper()
	s := &stack{log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		opts: streams.Options{Storage: jetstream.MemoryStorage}}
	_, _, s.js = natstest.Run(t)
	require.NoError(t, stream.EnsureStreams(ctx, s.js, engine.StreamConfigs(s.opts)))
	reg, err := registry.New(s.js, registry.Config{Logger: s.log})
	require.NoError(t, err)
	require.NoError(t, reg.Start(ctx))
	t.Cleanup(func() { _ = reg.Stop(context.Background()) })
	s.reg = reg

	svc := httptest.NewServer(handler)
	t.Cleanup(svc.Close)
	u, err := url.Parse(svc.URL)
	require.NoError(t, err)
	s.svcs, err = services.NewRegistry(services.Service{Name: "svc", BaseURL: u})
	require.NoError(t, err)
	return s
}

// openEngine opens an engine of cfg on the stack (its definitions, services, logger and
// streams the stack's), closed when the test ends.
func (s *stack) openEngine(t *testing.T, ctx context.Context, cfg engine.Config) *engine.Engine {
	t.Helper()
	cfg.Definitions, cfg.Services, cfg.Logger, cfg.Streams = s.reg, s.svcs, s.log, s.opts
	eng, err := engine.New(s.js, cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Open(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, eng.Close(stopCtx))
	})
	return eng
}

// scrape GETs /metrics and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// value returns the value of the series of name with the given labels (name=value pairs),
// and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		default:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// fixed is a Source with set values.
type fixed struct{ st engine.Stats }

func (f fixed) Stats() engine.Stats { return f.st }
func (f fixed) Queue() ([]dispatcher.Entry, int) {
	return []dispatcher.Entry{{ExecutionID: "a"}, {ExecutionID: "b"}}, 3
}

func TestMetricsReportTheStatsAsTheyAre(t *testing.T) {
	src := fixed{engine.Stats{
		ProcessID:    "p1",
		Orchestrator: orchestrator.Stats{Decided: 9, Conflicts: 2, CacheHits: 7, CacheMisses: 4, HistoryLoads: 1, Seeded: 6, HandedOver: 5, Partitions: []int{0, 3}},
		Reports:      &runner.Reports{HandedOver: 5, Published: 2},
		Members:      []string{"p1", "p2"},
		Leader:       true,
		Reconciler:   &reconciler.Stats{Passes: 5, Reissued: 1},
		Triggers:     &triggers.Stats{Started: 8, Before: 2, Skipped: 1, DeadLettered: 3},
		Loops: map[string]consume.Stats{
			"orchestrator": {Handled: 11, Retried: 1},
			"runner":       {Handled: 6, DeadLettered: 2, Panics: 1},
		},
	}}
	srv := httptest.NewServer(metrics.Handler(metrics.NewRegistry(src)))
	t.Cleanup(srv.Close)
	fams := scrape(t, srv.URL)

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"memmie_process_info", []string{"process_id", "p1"}, 1},
		{"memmie_orchestrator_decided_total", nil, 9},
		{"memmie_orchestrator_occ_conflicts_total", nil, 2},
		{"memmie_orchestrator_cache_hits_total", nil, 7},
		{"memmie_orchestrator_cache_misses_total", nil, 4},
		{"memmie_orchestrator_history_loads_total", nil, 1},
		{"memmie_orchestrator_partitions", nil, 2},
		{"memmie_orchestrator_seeded_total", nil, 6},
		{"memmie_orchestrator_handed_over_total", nil, 5},
		{"memmie_runner_reports_total", []string{"path", "local"}, 5},
		{"memmie_runner_reports_total", []string{"path", "inbox"}, 2},
		{"memmie_consume_handled_total", []string{"handler", "orchestrator"}, 11},
		{"memmie_consume_retried_total", []string{"handler", "orchestrator"}, 1},
		{"memmie_consume_handled_total", []string{"handler", "runner"}, 6},
		{"memmie_consume_dead_lettered_total", []string{"handler", "runner"}, 2},
		{"memmie_consume_panics_total", []string{"handler", "runner"}, 1},
		{"memmie_reconciler_passes_total", nil, 5},
		{"memmie_reconciler_reissued_total", nil, 1},
		{"memmie_triggers_started_total", nil, 8},
		{"memmie_triggers_started_before_total", nil, 2},
		{"memmie_triggers_skipped_total", nil, 1},
		{"memmie_triggers_dead_lettered_total", nil, 3},
		{"memmie_dispatcher_leader", nil, 1},
		{"memmie_cluster_members", nil, 2},
		{"memmie_dispatcher_queued_executions", nil, 2},
		{"memmie_dispatcher_running_executions", nil, 3},
	} {
		got, ok := value(fams, c.name, c.labels...)
		if assert.True(t, ok, "%s%v missing", c.name, c.labels) {
			assert.Equal(t, c.want, got, "%s%v", c.name, c.labels)
		}
	}
	assert.Equal(t, dto.MetricType_COUNTER, fams["memmie_consume_handled_total"].GetType())
	assert.Equal(t, dto.MetricType_GAUGE, fams["memmie_dispatcher_queued_executions"].GetType())
	assert.NotEmpty(t, fams["memmie_orchestrator_occ_conflicts_total"].GetHelp())
	assert.Contains(t, fams, "go_goroutines", "the Go runtime's metrics")
}

func TestMetricsOfARealEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	s := newStack(t, ctx, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	})
	reg, log := s.reg, s.log

	caller, err := services.NewCaller(services.Config{Registry: s.svcs})
	require.NoError(t, err)
	t.Cleanup(caller.Close)
	calls := metrics.NewCalls(caller)
	eng := s.openEngine(t, ctx, engine.Config{Caller: calls, Cluster: engine.Cluster{ProcessID: "p1"}})
	// With a token: /metrics is served without one all the same.
	h, err := api.New(api.Config{Registry: reg, Engine: eng, Logger: log, Token: "t0ken",
		Metrics: metrics.Handler(metrics.NewRegistry(eng, calls))})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	call := func(method, path, contentType, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer t0ken")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var out map[string]any
		require.NoError(t, json.Unmarshal(b, &out), "%s", b)
		return resp.StatusCode, out
	}
	st, out := call("PUT", "/v1/workflows/w", "application/yaml", "id: w\nsteps: [{id: call, type: api_call, service: svc, endpoint: /x}]\n")
	require.Equal(t, http.StatusOK, st, "%v", out)
	st, out = call("POST", "/v1/executions", "application/json", `{"workflow_id": "w"}`)
	require.Equal(t, http.StatusAccepted, st, "%v", out)
	id := out["execution_id"].(string)
	require.Eventually(t, func() bool {
		_, out := call("GET", "/v1/executions/"+id, "", "")
		return out["status"] == "completed"
	}, 30*time.Second, 20*time.Millisecond, "execution %s completes", id)

	fams := scrape(t, srv.URL)
	positive := func(name string, labels ...string) {
		t.Helper()
		v, ok := value(fams, name, labels...)
		assert.True(t, ok, "%s%v missing", name, labels)
		assert.Greater(t, v, 0.0, "%s%v", name, labels)
	}
	positive("memmie_consume_handled_total", "handler", "orchestrator")
	positive("memmie_consume_handled_total", "handler", "runner")
	positive("memmie_orchestrator_decided_total")
	positive("memmie_orchestrator_partitions")
	positive("memmie_cluster_members")
	v, ok := value(fams, "memmie_process_info", "process_id", "p1")
	assert.True(t, ok)
	assert.Equal(t, 1.0, v)
	v, ok = value(fams, "memmie_consume_dead_lettered_total", "handler", "runner")
	assert.True(t, ok)
	assert.Equal(t, 0.0, v, "nothing dead-lettered")
	// The one step's one call, timed by Calls.
	hist := fams["memmie_step_call_duration_seconds"]
	if assert.NotNil(t, hist, "the calls histogram") && assert.Len(t, hist.GetMetric(), 1) {
		m := hist.GetMetric()[0]
		assert.Equal(t, uint64(1), m.GetHistogram().GetSampleCount())
		assert.Equal(t, map[string]string{"service": "svc", "outcome": "ok"}, map[string]string{
			m.GetLabel()[0].GetName(): m.GetLabel()[0].GetValue(), m.GetLabel()[1].GetName(): m.GetLabel()[1].GetValue()})
	}
	// The execution was admitted, so this process leads the dispatcher.
	v, _ = value(fams, "memmie_dispatcher_leader")
	assert.Equal(t, 1.0, v)
}
