package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/memmie/memmie/handlers/dispatcher"
	"github.com/memmie/memmie/internal/app/engine"
)

// Source is what the collector reads at each scrape; *engine.Engine is one.
type Source interface {
	Stats() engine.Stats
	Queue() (queued []dispatcher.Entry, running int)
}

// NewRegistry returns a registry (not Prometheus's global one, so that several engines in one
// process, as in tests, each have their own) holding src's collector, the Go runtime's and the
// process's, and more (such as the Calls given to the engine).
func NewRegistry(src Source, more ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(more...)
	return reg
}

// Handler serves g in the Prometheus text format (or OpenMetrics, when the scraper asks).
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Collector turns an engine's Stats and Queue into metrics at scrape time.
type Collector struct {
	src Source
}

// NewCollector returns the collector of src.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("memmie_"+name, help, labels, nil)
}

var (
	processInfo = desc("process_info", "Always 1; names this process among those that share the work.", "process_id")

	decided      = desc("orchestrator_decided_total", "Commands the orchestrator recorded with their decisions.")
	conflicts    = desc("orchestrator_occ_conflicts_total", "Appends refused because another writer appended to the execution first (optimistic concurrency).")
	cacheHits    = desc("orchestrator_cache_hits_total", "Commands whose execution state was in the orchestrator's cache.")
	cacheMisses  = desc("orchestrator_cache_misses_total", "Commands whose execution state was not in the orchestrator's cache.")
	historyLoads = desc("orchestrator_history_loads_total", "Whole execution histories read from the stream.")
	partitions   = desc("orchestrator_partitions", "Inbox partitions this process's orchestrator consumes now.")

	handled      = desc("consume_handled_total", "Deliveries given to a handler.", "handler")
	retried      = desc("consume_retried_total", "Deliveries that failed for a transient reason and were handed back to be tried again.", "handler")
	deadLettered = desc("consume_dead_lettered_total", "Messages a handler could never process, recorded on the dead-letter stream.", "handler")
	panics       = desc("consume_panics_total", "Handler panics.", "handler")

	reconPasses   = desc("reconciler_passes_total", "Passes of the reconciler over the executions that have not ended.")
	reconChecked  = desc("reconciler_checked_total", "Executions the reconciler looked at.")
	reconLoaded   = desc("reconciler_loaded_total", "Execution histories the reconciler read and folded.")
	reconReissued = desc("reconciler_reissued_total", "Timers the reconciler fired again.")

	seeded     = desc("orchestrator_seeded_total", "First inputs decided on the queued event this process appended, without a read of the history.")
	handedOver = desc("orchestrator_handed_over_total", "Step reports of this process's runner recorded in the process, without the inbox.")
	reports    = desc("runner_reports_total", "The runner's step reports, by path: recorded in the process (local) or published to the inbox (inbox).", "path")

	trigStarted      = desc("triggers_started_total", "Executions the trigger matcher queued.")
	trigBefore       = desc("triggers_started_before_total", "Starts the trigger matcher found queued already (a request handled again).")
	trigSkipped      = desc("triggers_skipped_total", "Starts of workflows not registered or not active, skipped by the trigger matcher.")
	trigDeadLettered = desc("triggers_dead_lettered_total", "Trigger requests the matcher could never process, recorded on the dead-letter stream.")

	leader  = desc("dispatcher_leader", "1 while this process's dispatcher admits executions, 0 otherwise.")
	members = desc("cluster_members", "Live processes sharing the work, as this process sees them.")
	queued  = desc("dispatcher_queued_executions", "Executions queued, waiting for the dispatcher to start them (0 on a process that does not lead).")
	running = desc("dispatcher_running_executions", "Executions the dispatcher counts as running (0 on a process that does not lead).")
)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{processInfo, decided, conflicts, cacheHits, cacheMisses, historyLoads, partitions,
		handled, retried, deadLettered, panics, reconPasses, reconChecked, reconLoaded, reconReissued,
		seeded, handedOver, reports, trigStarted, trigBefore, trigSkipped, trigDeadLettered, leader, members, queued, running} {
		ch <- d
	}
}

// Collect reads the engine once and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	q, run := c.src.Queue()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}

	ch <- prometheus.MustNewConstMetric(processInfo, prometheus.GaugeValue, 1, st.ProcessID)
	o := st.Orchestrator
	counter(decided, o.Decided)
	counter(conflicts, o.Conflicts)
	counter(cacheHits, o.CacheHits)
	counter(cacheMisses, o.CacheMisses)
	counter(historyLoads, o.HistoryLoads)
	gauge(partitions, float64(len(o.Partitions)))
	counter(seeded, o.Seeded)
	counter(handedOver, o.HandedOver)
	if r := st.Reports; r != nil {
		counter(reports, r.HandedOver, "local")
		counter(reports, r.Published, "inbox")
	}
	for name, l := range st.Loops {
		counter(handled, l.Handled, name)
		counter(retried, l.Retried, name)
		counter(deadLettered, l.DeadLettered, name)
		counter(panics, l.Panics, name)
	}
	if r := st.Reconciler; r != nil {
		counter(reconPasses, r.Passes)
		counter(reconChecked, r.Checked)
		counter(reconLoaded, r.Loaded)
		counter(reconReissued, r.Reissued)
	}
	if tr := st.Triggers; tr != nil {
		counter(trigStarted, tr.Started)
		counter(trigBefore, tr.Before)
		counter(trigSkipped, tr.Skipped)
		counter(trigDeadLettered, tr.DeadLettered)
	}
	var lead float64
	if st.Leader {
		lead = 1
	}
	gauge(leader, lead)
	gauge(members, float64(len(st.Members)))
	gauge(queued, float64(len(q)))
	gauge(running, float64(run))
}
