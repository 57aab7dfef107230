package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/core/blob"
)

// BlobOutputs is a blobs.OutputObserver that times the way from a blob event to the last
// delta of the execution it triggered: from the timestamp of the delta that recorded the
// event (the blob's version base_version, memmie's clock when the writer of blob histories
// recorded it, not the client's event time) to the timestamp of the execution's last delta.
// Register it with NewRegistry and give it to the engine as Config.Blobs.Observer.
//
// The outputs path knows the recording delta's time without a read only when the deltas
// were applied on it: when nothing else was written on the blob between the blob event and
// the execution's output (the state is still at base_version). The other outputs are counted
// in memmie_blob_outputs_unmeasured_total, so that the share the histogram leaves out shows.
type BlobOutputs struct {
	latency    prometheus.Histogram
	unmeasured prometheus.Counter
}

// NewBlobOutputs returns the blob output timings.
func NewBlobOutputs() *BlobOutputs {
	return &BlobOutputs{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "memmie_blob_event_to_last_delta_seconds",
			Help: "Time from the delta recording a blob event (its base_version) to the last delta of an execution it triggered, for the outputs this process wrote on a blob still at that version.",
			// From a transform-only workflow on a local server to minutes of queuing.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		unmeasured: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "memmie_blob_outputs_unmeasured_total",
			Help: "Outputs of triggered executions this process wrote whose blob had moved on from the version the execution read (or whose write resumed), so that memmie_blob_event_to_last_delta_seconds could not time them.",
		}),
	}
}

// OutputWritten observes the latency of one written output.
func (b *BlobOutputs) OutputWritten(x blob.Execution, before *blob.State, last events.Delta) {
	if before.Version != x.BaseVersion || before.Last.SourceEventID != x.SourceEventID || before.UpdatedAt.IsZero() {
		b.unmeasured.Inc()
		return
	}
	b.latency.Observe(max(0, last.Timestamp.Sub(before.UpdatedAt).Seconds()))
}

// Describe describes the metrics.
func (b *BlobOutputs) Describe(ch chan<- *prometheus.Desc) {
	b.latency.Describe(ch)
	b.unmeasured.Describe(ch)
}

// Collect sends the metrics.
func (b *BlobOutputs) Collect(ch chan<- prometheus.Metric) {
	b.latency.Collect(ch)
	b.unmeasured.Collect(ch)
}
