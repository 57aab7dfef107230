package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPercentilesByNearestRank(t *testing.T) {
	var took []time.Duration
	for i := 100; i >= 1; i-- { // out of order: percentiles sorts
		took = append(took, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		name                string
		took                []time.Duration
		p50, p95, p99, most float64
	}{
		{"none", nil, 0, 0, 0, 0},
		{"one", []time.Duration{3 * time.Millisecond}, 3, 3, 3, 3},
		{"a hundred", took, 50, 95, 99, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := percentiles(100, tc.took, 2)
			assert.Equal(t, Percentiles{OfferedPerS: 100, Samples: len(tc.took), Lost: 2, P50: tc.p50, P95: tc.p95, P99: tc.p99, Max: tc.most}, r)
		})
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -20000: "-20,000"} {
		assert.Equal(t, want, thousands(n))
	}
}

func TestWriteTableAlignsItsRows(t *testing.T) {
	rep := &Report{Settings: Settings{Steps: 3, Executions: 10, DurationSeconds: 2},
		Ceilings: &Ceilings{AsyncPublish: 123456.4, PGCopy: 1000}}
	var b strings.Builder
	require.NoError(t, rep.WriteTable(&b))
	col := map[string]int{}
	for _, l := range strings.Split(b.String(), "\n") {
		for _, v := range []string{"123,456 msgs/s", "1,000 rows/s"} {
			if strings.HasSuffix(l, v) {
				col[v] = strings.Index(l, v)
			}
		}
	}
	require.Len(t, col, 2, b.String())
	assert.Equal(t, col["123,456 msgs/s"], col["1,000 rows/s"], "values in one column:\n%s", b.String())
}

// TestSustainedRunByMinute: a run of three minutes and a few seconds has three whole minutes,
// each with its own rate, CPU per execution and largest heap, and memory samples every 10 s.
func TestSustainedRunByMinute(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	r := &saturationRun{cfg: Config{Steps: 3, Duration: 3 * time.Minute}}
	var ended int64
	cpu := 0.0
	for i := 0; i <= 185; i++ {
		perS := int64(10)
		if i > 120 {
			perS = 9 // the third minute is slower
		}
		if i > 0 {
			ended += perS
			cpu += float64(perS) * 0.005
		}
		r.samples = append(r.samples, sample{at: t0.Add(time.Duration(i) * time.Second), ended: ended, cpu: cpu,
			heap: uint64(100+i) << 20, rss: uint64(200+i) << 20})
	}
	r.end = len(r.samples) - 1

	mins := r.minutes(0)
	require.Len(t, mins, 3, "the 5 s past the third minute are no minute")
	for i, m := range mins {
		assert.InDelta(t, float64(60*i), m.FromSeconds, 0.001)
		assert.InDelta(t, float64(60*(i+1)), m.ToSeconds, 0.001)
		assert.InDelta(t, 5.0, m.CPUSecondsPer1000, 1e-9, "minute %d", i+1)
		assert.Equal(t, uint64(100+60*(i+1))<<20, m.MaxHeapBytes, "minute %d", i+1)
		assert.Equal(t, uint64(200+60*(i+1))<<20, m.MaxRSSBytes, "minute %d", i+1)
	}
	assert.InDelta(t, 10.0, mins[0].ExecutionsPerS, 1e-9)
	assert.InDelta(t, 9.0, mins[2].ExecutionsPerS, 1e-9)

	sat, res := r.report(nil)
	assert.InDelta(t, 0.9, sat.LastOverFirstMinute, 1e-9)
	assert.InDelta(t, float64(280)/160, sat.HeapLastOverFirstMinute, 1e-9)
	require.Len(t, res.Memory, 20, "every 10 s from 0 to 180, and the last sample")
	assert.Equal(t, MemorySample{AtSeconds: 10, HeapBytes: 110 << 20, RSSBytes: 210 << 20, Ended: 100}, res.Memory[1])
	assert.Equal(t, 185.0, res.Memory[len(res.Memory)-1].AtSeconds)
	assert.Equal(t, uint64(385)<<20, res.PeakSampledRSSBytes)

	// Late samples: the one before the end is 5 s short of the third minute, the end 1 s past it.
	late := append(slices.Clone(r.samples[:176]), r.samples[181])
	late[len(late)-1].at = t0.Add(181 * time.Second)
	r.samples, r.end = late, len(late)-1
	require.Len(t, r.minutes(0), 3, "the end sample closes the last minute")

	r.samples, r.end = r.samples[:100], 99
	assert.Nil(t, r.minutes(0), "under two minutes: no minutes")
}
