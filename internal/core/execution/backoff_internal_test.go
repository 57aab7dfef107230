package execution

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
)

func TestRetryDelay(t *testing.T) {
	policy := definitions.RetryPolicy{MaxAttempts: 10, BackoffMS: 1000, Multiplier: 2, MaxBackoffMS: 5000}.WithDefaults()
	none := events.Response{StatusCode: 500}

	t.Run("jitter stays within its fraction and caps at max_backoff_ms", func(t *testing.T) {
		for seed := int64(0); seed < 200; seed++ {
			for attempt, base := range map[int]float64{1: 1000, 2: 2000, 3: 4000} {
				d := retryDelay(policy, none, seed, "step", 1, "s", attempt)
				assert.GreaterOrEqual(t, d, time.Duration(base*0.8)*time.Millisecond)
				assert.LessOrEqual(t, d, time.Duration(base*1.2)*time.Millisecond)
			}
			d := retryDelay(policy, none, seed, "step", 1, "s", 6) // 32 s before the cap
			assert.GreaterOrEqual(t, d, 4000*time.Millisecond)
			assert.LessOrEqual(t, d, 5000*time.Millisecond)
		}
	})

	t.Run("jitter depends only on seed, run, step and attempt", func(t *testing.T) {
		a := retryDelay(policy, none, 7, "step", 1, "s", 1)
		assert.Equal(t, a, retryDelay(policy, none, 7, "step", 1, "s", 1))
		differs := 0
		for _, d := range []time.Duration{
			retryDelay(policy, none, 8, "step", 1, "s", 1),
			retryDelay(policy, none, 7, "step", 2, "s", 1),
			retryDelay(policy, none, 7, "step", 1, "t", 1),
			retryDelay(policy, none, 7, "compensation", 1, "s", 1),
		} {
			if d != a {
				differs++
			}
		}
		assert.GreaterOrEqual(t, differs, 3, "each input moves the jitter")
	})

	t.Run("jitter spreads evenly", func(t *testing.T) {
		var sum, low float64
		const n = 4000
		for seed := int64(0); seed < n; seed++ {
			u := unit(seed, "step", 1, "s", 1)
			sum += u
			if u < 0.25 {
				low++
			}
		}
		assert.InDelta(t, 0.5, sum/n, 0.02)
		assert.InDelta(t, 0.25, low/n, 0.03)
	})

	t.Run("zero jitter is exact", func(t *testing.T) {
		zero := 0.0
		p := policy
		p.Jitter = &zero
		assert.Equal(t, 4*time.Second, retryDelay(p, none, 1, "step", 1, "s", 3))
	})

	t.Run("execution retries back off and cap", func(t *testing.T) {
		assert.InDelta(t, ExecutionRetryBackoff.Milliseconds(), executionRetryDelay(3, 1).Milliseconds(), 0.2*float64(ExecutionRetryBackoff.Milliseconds()))
		assert.InDelta(t, 2*ExecutionRetryBackoff.Milliseconds(), executionRetryDelay(3, 2).Milliseconds(), 0.4*float64(ExecutionRetryBackoff.Milliseconds()))
		assert.LessOrEqual(t, executionRetryDelay(3, 20), MaxExecutionRetryBackoff)
	})
}
