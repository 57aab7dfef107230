package bench

import (
	"context"
	"fmt"
	"math"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/memmie/memmie/internal/app/engine"
)

// starters start the saturation run's executions, as that many API clients would.
const starters = 8

// maxDrain bounds the drain of the saturation run.
const maxDrain = 15 * time.Minute

// drainTail is the work (at the recent rate) left queued at the end of the sustained run,
// and rateOver the seconds the recent rate is measured over.
const (
	drainTail = 10 * time.Second
	rateOver  = 10
)

// sample is what the saturation run reads every second.
type sample struct {
	at        time.Time
	ended     int64
	stored    uint64 // messages appended to the memmie streams
	bytes     uint64 // their bytes
	cpu       float64
	heap      uint64
	rss       uint64
	allocated uint64
	lag       float64
	lagKnown  bool
}

// saturationRun is the saturation run's record.
type saturationRun struct {
	cfg     Config
	samples []sample // from the start, the end of the sustained run at index end
	end     int
	drained time.Time
	// feedStopped is when the run began to queue fewer than cfg.Executions, so as to drain
	// soon after its end, zero when it never did; queuedAtEnd is what was queued or running
	// at its end.
	feedStopped time.Time
	queuedAtEnd int64
	started     int64
	completed   int64
	failed      int64
	maxLag      float64
	lagSamples  int
	peakHeap    uint64
}

func (b *bench) sample(ctx context.Context) (sample, error) {
	s := sample{at: time.Now(), ended: b.ends.ended64(), cpu: cpuSeconds(), rss: rss()}
	s.heap, s.allocated = heap()
	for _, name := range b.names {
		st, err := b.js.Stream(ctx, name)
		if err != nil {
			return s, fmt.Errorf("bench: read stream %s: %w", name, err)
		}
		state := st.CachedInfo().State
		s.stored += state.LastSeq
		s.bytes += state.Bytes
	}
	if b.lag != nil {
		s.lag, s.lagKnown = b.lag.seconds()
	}
	return s, nil
}

// saturation queues cfg.Executions executions and starts one more as each ends, for
// cfg.Duration or until what is queued lasts the rest of the run (see drainTail), then waits
// for those left to end.
func (b *bench) saturation(ctx context.Context) (*saturationRun, error) {
	cfg := b.cfg
	run := &saturationRun{cfg: cfg}
	slots := make(chan struct{}, cfg.Executions)
	release := func() {
		select {
		case <-slots:
		default:
		}
	}
	b.ends.onEnd.Store(&release)
	defer b.ends.onEnd.Store(nil)
	base := b.ends.ended64()
	failedBase := b.ends.failed.Load()

	feedCtx, stopFeeding := context.WithCancel(ctx)
	var (
		started  atomic.Int64
		limit    atomic.Int64 // of executions queued or running
		wg       sync.WaitGroup
		startErr atomic.Pointer[error]
	)
	limit.Store(int64(cfg.Executions))
	defer func() { stopFeeding(); wg.Wait() }() // no start outlives the run, on failures too
	b.progress("saturation", "%d-step workflow, %d executions queued at once, for %s", cfg.Steps, cfg.Executions, cfg.Duration)
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return nil, fmt.Errorf("bench: start the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile() // on failures; stopping twice is harmless
	}
	first, err := b.sample(ctx)
	if err != nil {
		return nil, err
	}
	run.samples = append(run.samples, first)
	var prof *profiler
	if cfg.ProfileDir != "" {
		if prof, err = startProfiles(cfg.ProfileDir, cfg.ProfileEvery, first.at); err != nil {
			return nil, err
		}
		defer func() { _ = prof.stop(time.Now()) }() // on failures; stopping twice is harmless
	}
	for g := range starters {
		wg.Go(func() {
			for i := g; ; i += starters {
				select {
				case slots <- struct{}{}:
				case <-feedCtx.Done():
					return
				}
				// Near the end the queue shrinks to what lasts the rest of the run (limit).
				for started.Load()-(b.ends.ended64()-base) >= limit.Load() && feedCtx.Err() == nil {
					select {
					case <-feedCtx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
				if feedCtx.Err() != nil {
					release()
					return
				}
				// ctx, not feedCtx: a start under way when the run ends completes.
				_, _, err := b.eng.Start(ctx, engine.StartRequest{WorkflowID: stepsID, ExecutionID: uuid.NewString(),
					Input: fmt.Appendf(nil, `{"n": %d}`, i)})
				if err != nil {
					err = fmt.Errorf("bench: start an execution: %w", err)
					startErr.CompareAndSwap(nil, &err)
					stopFeeding()
					release()
					return
				}
				started.Add(1)
			}
		})
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	endAt := first.at.Add(cfg.Duration)
	lastReport := first.at
	report := func(s sample, phase string) {
		prev := run.samples[max(0, len(run.samples)-1-int(cfg.ProgressEvery/time.Second))]
		r := float64(s.ended-prev.ended) / s.at.Sub(prev.at).Seconds()
		lag := "n/a"
		if s.lagKnown {
			lag = fmt.Sprintf("%.2f s", s.lag)
		}
		b.progress(phase, "%s elapsed, %s executions/s, %d ended, %d outstanding, projections' lag %s, heap %s",
			s.at.Sub(first.at).Round(time.Second), rate(r, ""), s.ended-base, started.Load()-(s.ended-base), lag, mib(s.heap))
	}
	take := func() (sample, error) {
		s, err := b.sample(ctx)
		if err != nil {
			return s, err
		}
		run.samples = append(run.samples, s)
		run.peakHeap = max(run.peakHeap, s.heap)
		if prof != nil {
			if err := prof.tick(s.at); err != nil {
				return s, err
			}
		}
		if s.lagKnown {
			run.maxLag = max(run.maxLag, s.lag)
			run.lagSamples++
		}
		if s.at.Sub(lastReport) >= cfg.ProgressEvery {
			lastReport = s.at
			phase := "saturation"
			if run.end > 0 {
				phase = "drain"
			}
			report(s, phase)
		}
		return s, nil
	}
	for run.end == 0 {
		wait := time.Until(endAt)
		if wait <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		case <-time.After(wait):
		}
		if p := startErr.Load(); p != nil {
			return nil, *p
		}
		s, err := take()
		if err != nil {
			return nil, err
		}
		if !time.Now().Before(endAt) {
			break
		}
		// Once cfg.Executions have been queued, the queue is kept at what lasts the rest of the
		// run at the rate of the last rateOver seconds, and drainTail more, when that is
		// less: the run stays saturated to its end and its drain is short. The limit follows
		// the rate, up as well as down, so that a long run is fed to its end.
		if started.Load() >= int64(cfg.Executions) && len(run.samples) > rateOver {
			prev := run.samples[max(0, len(run.samples)-1-rateOver)]
			r := float64(s.ended-prev.ended) / s.at.Sub(prev.at).Seconds()
			if r > 0 {
				lasts := int64(math.Ceil(r * (endAt.Sub(s.at) + drainTail).Seconds()))
				limit.Store(min(int64(cfg.Executions), lasts))
				if lasts < int64(cfg.Executions) && run.feedStopped.IsZero() {
					run.feedStopped = s.at
					b.progress("saturation", "from now on at most %d queued, what lasts the rest of the run at %s executions/s", lasts, rate(r, ""))
				}
			}
		}
	}
	run.end = len(run.samples) - 1
	stopFeeding()
	wg.Wait()
	if p := startErr.Load(); p != nil {
		return nil, *p
	}
	run.started = started.Load()
	run.queuedAtEnd = run.started - (run.samples[run.end].ended - base)
	b.progress("drain", "%d executions started; waiting for %d to end", run.started, run.started-(b.ends.ended64()-base))

	drainBy := time.Now().Add(maxDrain)
	for b.ends.ended64()-base < run.started {
		if time.Now().After(drainBy) {
			return nil, fmt.Errorf("bench: %d of %d executions ended within %s of the run's end",
				b.ends.ended64()-base, run.started, maxDrain)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		if _, err := take(); err != nil {
			return nil, err
		}
	}
	run.drained = time.Now()
	if cfg.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	if prof != nil {
		if err := prof.stop(run.drained); err != nil {
			return nil, err
		}
	}
	if cfg.AllocProfile != nil {
		if err := pprof.Lookup("allocs").WriteTo(cfg.AllocProfile, 0); err != nil {
			return nil, fmt.Errorf("bench: write the allocations profile: %w", err)
		}
	}
	last, err := take()
	if err != nil {
		return nil, err
	}
	run.failed = b.ends.failed.Load() - failedBase
	run.completed = last.ended - base - run.failed
	b.progress("drain", "drained in %s; %d completed, %d failed", run.drained.Sub(run.samples[run.end].at).Round(time.Second),
		run.completed, run.failed)
	return run, nil
}

// window is the throughput between two samples.
func (r *saturationRun) window(from, to int, async float64) Window {
	a, z := r.samples[from], r.samples[to]
	secs := z.at.Sub(a.at).Seconds()
	w := Window{FromSeconds: a.at.Sub(r.samples[0].at).Seconds(), ToSeconds: z.at.Sub(r.samples[0].at).Seconds()}
	if secs <= 0 {
		return w
	}
	w.ExecutionsPerS = float64(z.ended-a.ended) / secs
	w.StepsPerS = w.ExecutionsPerS * float64(r.cfg.Steps)
	w.StoredMsgsPerS = float64(z.stored-a.stored) / secs
	if async > 0 {
		w.AsyncRatio = w.StoredMsgsPerS / async
	}
	if n := z.ended - a.ended; n > 0 {
		w.CPUSecondsPer1000 = (z.cpu - a.cpu) / float64(n) * 1000
	}
	for _, s := range r.samples[from+1 : to+1] {
		w.MaxHeapBytes, w.MaxRSSBytes = max(w.MaxHeapBytes, s.heap), max(w.MaxRSSBytes, s.rss)
	}
	return w
}

// minutes are the sustained run's whole minutes, when it lasts two or more. A minute ends at
// its last sample, or at the run's end sample when that comes within minuteSlack after it
// (samples come late on a busy machine), and is whole when it reaches minuteSlack before it.
func (r *saturationRun) minutes(async float64) []Window {
	const minuteSlack = 2 * time.Second
	var out []Window
	from := 0
	for m := 1; ; m++ {
		end := time.Duration(m) * time.Minute
		to := from
		for to < r.end {
			at := r.samples[to+1].at.Sub(r.samples[0].at)
			if at > end && (to+1 < r.end || at > end+minuteSlack) {
				break
			}
			to++
		}
		if to == from || r.samples[to].at.Sub(r.samples[0].at) < end-minuteSlack {
			break // not a whole minute
		}
		out = append(out, r.window(from, to, async))
		from = to
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// memoryEvery is the spacing of the report's memory samples.
const memoryEvery = 10 * time.Second

// memory samples the heap and the resident set every memoryEvery of the run and its drain.
func (r *saturationRun) memory() []MemorySample {
	var out []MemorySample
	next := time.Duration(0)
	for i, s := range r.samples {
		at := s.at.Sub(r.samples[0].at)
		if at < next && i != len(r.samples)-1 {
			continue
		}
		out = append(out, MemorySample{AtSeconds: at.Seconds(), HeapBytes: s.heap, RSSBytes: s.rss, Ended: s.ended - r.samples[0].ended})
		next = at.Truncate(memoryEvery) + memoryEvery
	}
	return out
}

// firstWithin is the index of the last sample of the sustained run taken within d of its
// start (at least the second sample), and lastWithin that of the first taken within d of its
// end (at most the one before the end).
func (r *saturationRun) firstWithin(d time.Duration) int {
	i := 1
	for i < r.end && r.samples[i+1].at.Sub(r.samples[0].at) <= d {
		i++
	}
	return i
}

func (r *saturationRun) lastWithin(d time.Duration) int {
	endAt := r.samples[r.end].at
	i := r.end - 1
	for i > 0 && endAt.Sub(r.samples[i-1].at) <= d {
		i--
	}
	return max(0, i)
}

// report turns the record into the report's saturation and resources.
func (r *saturationRun) report(c *Ceilings) (*Saturation, *Resources) {
	var async float64
	if c != nil {
		async = c.AsyncPublish
	}
	win := min(30*time.Second, r.cfg.Duration/2)
	s := &Saturation{Workflow: stepsID, Steps: r.cfg.Steps, Queued: r.cfg.Executions, DurationSeconds: r.cfg.Duration.Seconds(),
		Started: r.started, Completed: r.completed, Failed: r.failed, WindowSeconds: win.Seconds(),
		Overall: r.window(0, r.end, async), First: r.window(0, r.firstWithin(win), async),
		Last: r.window(r.lastWithin(win), r.end, async), DrainSeconds: r.drained.Sub(r.samples[r.end].at).Seconds(),
		QueuedAtEnd: r.queuedAtEnd}
	if !r.feedStopped.IsZero() {
		s.FeedStoppedSeconds = r.feedStopped.Sub(r.samples[0].at).Seconds()
	}
	if s.Minutes = r.minutes(async); len(s.Minutes) > 0 {
		first, last := s.Minutes[0], s.Minutes[len(s.Minutes)-1]
		if first.ExecutionsPerS > 0 {
			s.LastOverFirstMinute = last.ExecutionsPerS / first.ExecutionsPerS
		}
		if first.MaxHeapBytes > 0 {
			s.HeapLastOverFirstMinute = float64(last.MaxHeapBytes) / float64(first.MaxHeapBytes)
		}
	}

	a, z := r.samples[0], r.samples[len(r.samples)-1]
	res := &Resources{PeakHeapBytes: r.peakHeap, Memory: r.memory()}
	for _, s := range r.samples {
		res.PeakSampledRSSBytes = max(res.PeakSampledRSSBytes, s.rss)
	}
	if n := float64(z.ended - a.ended); n > 0 {
		res.CPUSecondsPer1000 = (z.cpu - a.cpu) / n * 1000
		res.AllocBytesPerExecution = float64(z.allocated-a.allocated) / n
		res.StoredBytesPerExecution = (float64(z.bytes) - float64(a.bytes)) / n
	}
	return s, res
}
