package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/metrics"
	"github.com/memmie/memmie/internal/core/blob"
	"github.com/memmie/memmie/internal/services"
)

// results is a runner.Caller that answers each call with the next of its results.
type results []services.Result

func (r *results) Call(context.Context, services.Request) services.Result {
	res := (*r)[0]
	*r = (*r)[1:]
	return res
}

func TestCallsCountByServiceAndStatusClass(t *testing.T) {
	next := &results{
		{StatusCode: 200, Duration: time.Millisecond},
		{StatusCode: 201, Duration: time.Millisecond},
		{StatusCode: 404, ErrorKind: services.KindHTTP},
		{StatusCode: 503, ErrorKind: services.KindHTTP},
		{ErrorKind: services.KindNetwork},
		{ErrorKind: services.KindTimeout},
		{StatusCode: 200, ErrorKind: services.KindDecode},
	}
	calls := metrics.NewCalls(next)
	for _, svc := range []string{"a", "a", "a", "b", "b", "b", "b"} {
		calls.Call(context.Background(), services.Request{Service: svc})
	}
	want := `
# HELP memmie_step_calls_total HTTP calls of api_call step attempts made by this process, by service and status class of the response (1xx to 5xx, or none when no response came).
# TYPE memmie_step_calls_total counter
memmie_step_calls_total{service="a",status_class="2xx"} 2
memmie_step_calls_total{service="a",status_class="4xx"} 1
memmie_step_calls_total{service="b",status_class="2xx"} 1
memmie_step_calls_total{service="b",status_class="5xx"} 1
memmie_step_calls_total{service="b",status_class="none"} 2
`
	require.NoError(t, testutil.CollectAndCompare(calls, strings.NewReader(want), "memmie_step_calls_total"))
	// The histogram keeps its outcomes: a, ok; a, http; b, http; network; timeout; decode.
	assert.Equal(t, 6, testutil.CollectAndCount(calls, "memmie_step_call_duration_seconds"))
}

func TestBlobOutputsTimeFromTheRecordingDelta(t *testing.T) {
	recorded := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	x := blob.Execution{ExecutionID: "e1", BlobID: "b1", BaseVersion: 3, SourceEventID: "ev3"}
	at := func(version int64, source string) *blob.State {
		return &blob.State{BlobID: "b1", Version: version, UpdatedAt: recorded,
			Last: events.DeltaMetadata{SourceEventID: source}}
	}
	last := events.Delta{Version: 5, Timestamp: recorded.Add(1500 * time.Millisecond)}
	o := metrics.NewBlobOutputs()
	o.OutputWritten(x, at(3, "ev3"), last)
	// The blob moved on (or the write resumed): its recording delta's time is not at hand.
	o.OutputWritten(x, at(4, "ev4"), last)
	// The same version recorded by another event (a history that is not this execution's).
	o.OutputWritten(x, at(3, "other"), last)

	require.NoError(t, testutil.CollectAndCompare(o, strings.NewReader(`
# HELP memmie_blob_outputs_unmeasured_total Outputs of triggered executions this process wrote whose blob had moved on from the version the execution read (or whose write resumed), so that memmie_blob_event_to_last_delta_seconds could not time them.
# TYPE memmie_blob_outputs_unmeasured_total counter
memmie_blob_outputs_unmeasured_total 2
`), "memmie_blob_outputs_unmeasured_total"))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(o))
	fams, err := reg.Gather()
	require.NoError(t, err)
	var h *dto.Histogram
	for _, f := range fams {
		if f.GetName() == "memmie_blob_event_to_last_delta_seconds" {
			require.Len(t, f.GetMetric(), 1)
			h = f.GetMetric()[0].GetHistogram()
		}
	}
	require.NotNil(t, h, "the histogram is gathered")
	assert.Equal(t, uint64(1), h.GetSampleCount())
	assert.InDelta(t, 1.5, h.GetSampleSum(), 1e-9)
	for _, b := range h.GetBucket() {
		want := uint64(0)
		if b.GetUpperBound() >= 2.5 {
			want = 1
		}
		assert.Equal(t, want, b.GetCumulativeCount(), "bucket le=%g", b.GetUpperBound())
	}
	assert.Equal(t, 0.001, h.GetBucket()[0].GetUpperBound(), "buckets from 1 ms")
}
