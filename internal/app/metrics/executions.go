package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/internal/core/execution"
)

// Executions is an orchestrator.Observer that times the executions the orchestrator ends, by
// workflow and status (completed, failed or cancelled). Register it with NewRegistry and give
// it to the engine as Config.Orchestrator.Observer.
//
// The orchestrator records each end with one append in the whole cluster and tells its
// observer after that append, so an end is observed once, by the process that recorded it
// (at most once: not when that process stops between the append and the observation). Sum
// over the processes for the cluster's counts. A failed execution retried by hand is observed
// again when its new run ends.
type Executions struct {
	total, run *prometheus.HistogramVec
}

// From a transform-only workflow to the longest workflow timeouts.
var executionBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// NewExecutions returns the execution timings.
func NewExecutions() *Executions {
	return &Executions{
		total: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "memmie_execution_duration_seconds",
			Help:    "Time from an execution's queuing (its first run's) to its end, for each end this process recorded, by workflow and status.",
			Buckets: executionBuckets,
		}, []string{"workflow", "status"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "memmie_execution_run_duration_seconds",
			Help:    "Time from the start of an execution's last run to its end, for each end this process recorded, by workflow and status; an execution cancelled before it started has none.",
			Buckets: executionBuckets,
		}, []string{"workflow", "status"}),
	}
}

// Ended observes the durations of an execution that ended.
func (e *Executions) Ended(s *execution.State) {
	if s.EndedAt.IsZero() {
		return
	}
	labels := []string{s.WorkflowID, string(s.Status)}
	if !s.QueuedAt.IsZero() {
		e.total.WithLabelValues(labels...).Observe(max(0, s.EndedAt.Sub(s.QueuedAt).Seconds()))
	}
	if !s.StartedAt.IsZero() {
		e.run.WithLabelValues(labels...).Observe(max(0, s.EndedAt.Sub(s.StartedAt).Seconds()))
	}
}

// Describe describes the histograms.
func (e *Executions) Describe(ch chan<- *prometheus.Desc) {
	e.total.Describe(ch)
	e.run.Describe(ch)
}

// Collect sends the histograms.
func (e *Executions) Collect(ch chan<- prometheus.Metric) {
	e.total.Collect(ch)
	e.run.Collect(ch)
}
