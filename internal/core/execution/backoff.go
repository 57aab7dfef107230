package execution

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
)

// MaxRetryAfter caps a Retry-After that a service asks for: a service cannot park an execution
// for longer (the workflow's timeout still bounds the whole run).
const MaxRetryAfter = 10 * time.Minute

// Automatic re-runs of an execution (max_retries) wait ExecutionRetryBackoff, doubled for each
// re-run, at most MaxExecutionRetryBackoff, with DefaultJitter. A run failed after its steps'
// own retries ran out, so the wait is longer than a step's.
const (
	ExecutionRetryBackoff    = 30 * time.Second
	MaxExecutionRetryBackoff = 30 * time.Minute
)

// retryDelay is the wait before the attempt after attempt (counted from 1): backoff_ms ×
// multiplier^(attempt-1), jittered by ±jitter, capped by max_backoff_ms. For 429 and 503 a
// Retry-After longer than that wins, up to MaxRetryAfter.
func retryDelay(p definitions.RetryPolicy, r events.Response, seed int64, what string, run int, stepID string, attempt int) time.Duration {
	base := float64(p.BackoffMS) * math.Pow(p.Multiplier, float64(attempt-1))
	ms := jitter(base, *p.Jitter, unit(seed, what, run, stepID, attempt))
	ms = math.Min(ms, float64(p.MaxBackoffMS))
	delay := time.Duration(ms) * time.Millisecond
	if (r.StatusCode == 429 || r.StatusCode == 503) && r.RetryAfterMS > 0 {
		delay = max(delay, min(time.Duration(r.RetryAfterMS)*time.Millisecond, MaxRetryAfter))
	}
	return delay
}

// executionRetryDelay is the wait before the n-th automatic re-run (from 1).
func executionRetryDelay(seed int64, n int) time.Duration {
	base := float64(ExecutionRetryBackoff.Milliseconds()) * math.Pow(2, float64(n-1))
	ms := jitter(base, definitions.DefaultJitter, unit(seed, "execution", n, "", 0))
	ms = math.Min(ms, float64(MaxExecutionRetryBackoff.Milliseconds()))
	return time.Duration(ms) * time.Millisecond
}

// jitter spreads ms by ±fraction, with u in [0, 1).
func jitter(ms, fraction, u float64) float64 {
	return math.Max(0, math.Round(ms*(1+fraction*(2*u-1))))
}

// unit returns a number in [0, 1) that depends only on its arguments: the execution's seed and
// the attempt it is for. It replaces a random source, so that a decision taken twice is the same.
func unit(seed int64, what string, run int, stepID string, attempt int) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(seed))
	h.Write(b[:])
	for _, s := range []string{what, stepID} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	binary.BigEndian.PutUint64(b[:], uint64(run)<<32|uint64(uint32(attempt)))
	h.Write(b[:])
	return float64(mix(h.Sum64())>>11) / (1 << 53)
}

// mix is SplitMix64's finaliser: FNV's low-entropy high bits become uniform.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
