package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/projections"
)

// Metric names of the projections' lag, as /metrics reports them.
const (
	lagSecondsMetric  = "memmie_projection_lag_seconds"
	lagMessagesMetric = "memmie_projection_lag_messages"
)

// maxCatchUp bounds the wait for the projections after the saturation run.
const maxCatchUp = 10 * time.Minute

// lagReader reads the projections' lag through the collector /metrics uses.
type lagReader struct {
	reg *prometheus.Registry
}

func newLagReader(js jetstream.JetStream, runners []*projections.Runner) (*lagReader, error) {
	// CacheFor is short: the lag is read once a second and wants the stream's end of now.
	c, err := metrics.NewProjections(metrics.ProjectionsConfig{JS: js, Runners: runners, CacheFor: time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &lagReader{reg: reg}, nil
}

// read returns the largest value of the metric over the projections, and whether any
// projection reported it (one that has committed nothing yet does not).
func (l *lagReader) read(name string) (float64, bool) {
	fams, _ := l.reg.Gather() // a projection that cannot be read is left out
	var (
		v     float64
		known bool
	)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			v, known = max(v, m.GetGauge().GetValue()), true
		}
	}
	return v, known
}

func (l *lagReader) seconds() (float64, bool) { return l.read(lagSecondsMetric) }

// catchUp waits until every projection has applied its stream, and returns how long that
// took. A projection that has committed nothing yet has no lag to read (see
// metrics.Projections); when none has, there is nothing to wait for.
func (b *bench) catchUp(ctx context.Context) (float64, error) {
	began := time.Now()
	err := waitFor(ctx, maxCatchUp, func() bool {
		msgs, known := b.lag.read(lagMessagesMetric)
		return !known || msgs == 0
	})
	if err != nil {
		return 0, fmt.Errorf("bench: the projections did not catch up within %s: %w", maxCatchUp, err)
	}
	took := time.Since(began)
	b.progress("projections", "caught up in %s", took.Round(10*time.Millisecond))
	return took.Seconds(), nil
}

// rebuild rebuilds the executions projection from MEMMIE_EXECUTIONS, as `memmie projections
// rebuild executions` does, while its live runner goes on.
func (b *bench) rebuild(ctx context.Context, p *Projections, c *Ceilings) error {
	var exec projections.Projection
	for _, x := range b.cfg.Projections {
		if x.Name() == "executions" {
			exec = x
		}
	}
	if exec == nil {
		return nil
	}
	b.progress("rebuild", "rebuilding the executions projection")
	res, err := projections.Rebuild(ctx, exec, projections.RebuildConfig{Pool: b.cfg.Pool, JS: b.js,
		Log: b.log.With("component", "rebuild")})
	if err != nil {
		return fmt.Errorf("bench: rebuild the executions projection: %w", err)
	}
	p.RebuildEvents, p.RebuildEventsPerS = res.Replayed, res.Rate()
	if c != nil && c.PGCopy > 0 {
		p.RebuildVsCopy = p.RebuildEventsPerS / c.PGCopy
	}
	b.progress("rebuild", "%d events at %s events/s", res.Replayed, rate(res.Rate(), ""))
	return nil
}
