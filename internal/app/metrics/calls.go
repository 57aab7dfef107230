package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/handlers/runner"
	"github.com/memmie/memmie/internal/services"
)

// Calls is a runner.Caller that times and counts the calls of another: one observation per
// attempt of an api_call step, by service and outcome ("ok", or the error kind: network,
// timeout, http, ...), and one count by service and status class (2xx, 4xx, 5xx, ..., or
// none when no response came: a network error or a timeout). Register it with NewRegistry and
// give it to the engine as its Caller.
type Calls struct {
	next  runner.Caller
	hist  *prometheus.HistogramVec
	total *prometheus.CounterVec
}

// NewCalls returns the timing Caller around next.
func NewCalls(next runner.Caller) *Calls {
	return &Calls{next: next, hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "memmie_step_call_duration_seconds",
		Help: "Duration of the HTTP call of each api_call step attempt made by this process, by service and outcome (ok or the error kind).",
		// From a fast local service to the longest step timeouts.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"service", "outcome"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "memmie_step_calls_total",
			Help: "HTTP calls of api_call step attempts made by this process, by service and status class of the response (1xx to 5xx, or none when no response came).",
		}, []string{"service", "status_class"}),
	}
}

// statusClasses are the label values of the status codes 100 to 599.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// statusClass returns the class of an HTTP status, "none" for no response (0), "other" for
// a code outside 100 to 599.
func statusClass(code int) string {
	switch {
	case code == 0:
		return "none"
	case code < 100 || code > 599:
		return "other"
	}
	return statusClasses[code/100-1]
}

// Call calls next and observes how long the call took.
func (c *Calls) Call(ctx context.Context, req services.Request) services.Result {
	res := c.next.Call(ctx, req)
	outcome := "ok"
	if !res.OK() {
		outcome = string(res.ErrorKind)
	}
	c.hist.WithLabelValues(req.Service, outcome).Observe(res.Duration.Seconds())
	c.total.WithLabelValues(req.Service, statusClass(res.StatusCode)).Inc()
	return res
}

// Describe describes the histogram and the counter.
func (c *Calls) Describe(ch chan<- *prometheus.Desc) {
	c.hist.Describe(ch)
	c.total.Describe(ch)
}

// Collect sends the histogram and the counter.
func (c *Calls) Collect(ch chan<- prometheus.Metric) {
	c.hist.Collect(ch)
	c.total.Collect(ch)
}
