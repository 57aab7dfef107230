package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/execution"
	"github.com/memmie/memmie/projections"
)

// Tables is what the Projections collector reads of the projections' tables; *views.Views is
// one.
type Tables interface {
	Checkpoints(ctx context.Context) ([]views.Checkpoint, error)
	ExecutionsByStatus(ctx context.Context) (map[string]int64, error)
}

// ProjectionsConfig configures a Projections collector.
type ProjectionsConfig struct {
	// JS reads the streams' last sequences and their oldest unapplied messages. Required.
	JS jetstream.JetStream
	// Runners are this process's projection runners: their lag is reported. Defaults to none.
	Runners []*projections.Runner
	// Tables, when set, is read for the checkpoints every process has written and for the
	// executions by status. Defaults to none: the lag is what this process's runners have
	// committed, and there are no executions by status.
	Tables Tables
	// Timeout bounds each read of a scrape (the database, the streams). Defaults to 1s.
	Timeout time.Duration
	// CacheFor is how long a stream's last sequence is kept between scrapes. Defaults to 1s.
	CacheFor time.Duration
	// Now is the clock of the lag in seconds. Defaults to time.Now.
	Now func() time.Time
}

// Projections reports, at each scrape, how far each projection lags its stream and how many
// executions the executions table holds by status.
//
// A projection's applied sequence is the newer of its checkpoint in projection_checkpoints
// (written by whichever process holds its lock, so every process reports the cluster's lag)
// and what this process's runner last committed (so that the writer still reports while the
// database cannot be read). Then:
//
//   - memmie_projection_lag_messages is the stream's last sequence minus the applied one (0
//     when caught up): the messages the projection has still to read, those it skips included;
//   - memmie_projection_lag_seconds is the age of the oldest message not applied yet (now minus
//     its stream timestamp), 0 when caught up: how old the newest fact missing from the table
//     may be.
//
// A projection whose applied sequence cannot be known (no database, and its runner has
// committed nothing) is left out. The stream's last sequence is cached for CacheFor.
type Projections struct {
	cfg ProjectionsConfig

	// mu makes one scrape at a time read the streams, and guards last.
	mu   sync.Mutex
	last map[string]streamLast // by stream name
}

type streamLast struct {
	stream jetstream.Stream
	seq    uint64
	at     time.Time
}

// NewProjections returns the collector.
func NewProjections(cfg ProjectionsConfig) (*Projections, error) {
	if cfg.JS == nil {
		return nil, errors.New("metrics: ProjectionsConfig.JS is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.CacheFor <= 0 {
		cfg.CacheFor = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Projections{cfg: cfg, last: map[string]streamLast{}}, nil
}

var (
	lagMessages = desc("projection_lag_messages", "Messages of the stream the projection has not applied yet: the stream's last sequence minus the projection's checkpoint.", "projection", "stream")
	lagSeconds  = desc("projection_lag_seconds", "Age of the oldest message of the stream the projection has not applied yet; 0 when it is caught up.", "projection", "stream")
	executions  = desc("executions", "Executions by status, as the executions projection holds them (see memmie_projection_lag_seconds).", "status")
)

// Describe sends the metrics' descriptions.
func (p *Projections) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagMessages
	ch <- lagSeconds
	if p.cfg.Tables != nil {
		ch <- executions
	}
}

// Collect reads the tables and the streams and sends the metrics.
func (p *Projections) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	type lag struct {
		projection, stream string
		applied            uint64
		known              bool
	}
	var lags []*lag
	for _, r := range p.cfg.Runners {
		st := r.Stats()
		lags = append(lags, &lag{projection: st.Projection, stream: st.Stream, applied: st.Applied, known: st.Applied > 0})
	}
	if t := p.cfg.Tables; t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
		cps, err := t.Checkpoints(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(lagMessages, err)
		} else {
			for _, l := range lags {
				l.known = true // without a row, nothing is applied yet
				for _, c := range cps {
					if c.Projection == l.projection && c.Stream == l.stream {
						l.applied = max(l.applied, c.LastSeq)
					}
				}
			}
		}
		p.collectExecutions(ch, t)
	}
	for _, l := range lags {
		if !l.known {
			continue
		}
		s, last, err := p.stream(l.stream)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(lagMessages, err)
			continue
		}
		var msgs uint64
		var secs float64
		if last > l.applied {
			msgs = last - l.applied
			at, err := oldestAfter(s, l.applied, p.cfg.Timeout)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(lagSeconds, err)
			} else if !at.IsZero() {
				secs = max(0, p.cfg.Now().Sub(at).Seconds())
			}
		}
		ch <- prometheus.MustNewConstMetric(lagMessages, prometheus.GaugeValue, float64(msgs), l.projection, l.stream)
		ch <- prometheus.MustNewConstMetric(lagSeconds, prometheus.GaugeValue, secs, l.projection, l.stream)
	}
}

func (p *Projections) collectExecutions(ch chan<- prometheus.Metric, t Tables) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	counts, err := t.ExecutionsByStatus(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(executions, err)
		return
	}
	// Every status, so that a status's series does not vanish when no execution has it.
	for _, s := range []execution.Status{execution.StatusQueued, execution.StatusRunning, execution.StatusCompensating,
		execution.StatusRetryScheduled, execution.StatusCompleted, execution.StatusFailed, execution.StatusCancelled} {
		if _, ok := counts[string(s)]; !ok {
			counts[string(s)] = 0
		}
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(executions, prometheus.GaugeValue, float64(n), s)
	}
}

// stream returns the stream and its last sequence, read at most once per CacheFor.
func (p *Projections) stream(name string) (jetstream.Stream, uint64, error) {
	now := time.Now()
	if c, ok := p.last[name]; ok && now.Sub(c.at) < p.cfg.CacheFor {
		return c.stream, c.seq, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	s, err := p.cfg.JS.Stream(ctx, name)
	if err != nil {
		return nil, 0, fmt.Errorf("read stream %s: %w", name, err)
	}
	c := streamLast{stream: s, seq: s.CachedInfo().State.LastSeq, at: now}
	p.last[name] = c
	return s, c.seq, nil
}

// oldestAfter returns the stream timestamp of the first message after seq; zero when there is
// none (the stream lost it since its last sequence was read).
func oldestAfter(s jetstream.Stream, seq uint64, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The first message at or after seq+1, whatever its subject: seq+1 itself may be gone.
	m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(">"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read message %d of %s: %w", seq+1, s.CachedInfo().Config.Name, err)
	}
	return m.Time, nil
}
