package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/internal/services"
)

// Calls is a runner.Caller that times the calls of another: one observation per attempt of an
// api_call step, by service and outcome ("ok", or the error kind: network, timeout, http, ...).
// Register it with NewRegistry and give it to the engine as its Caller.
type Calls struct {
	next runner.Caller
	hist *prometheus.HistogramVec
}

// NewCalls returns the timing Caller around next.
func NewCalls(next runner.Caller) *Calls {
	return &Calls{next: next, hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "memmie_step_call_duration_seconds",
		Help: "Duration of the HTTP call of each api_call step attempt made by this process, by service and outcome (ok or the error kind).",
		// From a fast local service to the longest step timeouts.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"service", "outcome"})}
}

// Call calls next and observes how long the call took.
func (c *Calls) Call(ctx context.Context, req services.Request) services.Result {
	res := c.next.Call(ctx, req)
	outcome := "ok"
	if !res.OK() {
		outcome = string(res.ErrorKind)
	}
	c.hist.WithLabelValues(req.Service, outcome).Observe(res.Duration.Seconds())
	return res
}

// Describe describes the histogram.
func (c *Calls) Describe(ch chan<- *prometheus.Desc) { c.hist.Describe(ch) }

// Collect sends the histogram.
func (c *Calls) Collect(ch chan<- prometheus.Metric) { c.hist.Collect(ch) }
