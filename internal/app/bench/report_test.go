package bench

import (
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
