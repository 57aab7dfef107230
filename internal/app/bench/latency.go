package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/engine"
)

// lostAfter is how long a latency sample is waited for before it counts as lost.
const lostAfter = time.Minute

// fire starts one thing to time: it returns when it was sent, the channel that receives its
// end, and forget, which drops the wait.
type fire func(ctx context.Context, i int) (sent time.Time, end <-chan outcome, forget func(), err error)

// startOne starts an execution of the saturation workflow.
func (b *bench) startOne(ctx context.Context, i int) (time.Time, <-chan outcome, func(), error) {
	id := uuid.NewString()
	end := b.ends.expect(id)
	sent := time.Now()
	_, _, err := b.eng.Start(ctx, engine.StartRequest{WorkflowID: stepsID, ExecutionID: id, Input: fmt.Appendf(nil, `{"n": %d}`, i)})
	if err != nil {
		b.ends.forget(id)
		return sent, nil, nil, fmt.Errorf("bench: start an execution: %w", err)
	}
	return sent, end, func() { b.ends.forget(id) }, nil
}

// publishOne publishes a new blob's created event, as a client does.
func (b *bench) publishOne(ctx context.Context, i int) (time.Time, <-chan outcome, func(), error) {
	blobID := uuid.NewString()
	subject, err := events.BlobSubject(blobID, events.BlobCreated)
	if err != nil {
		return time.Time{}, nil, nil, err
	}
	msg := nats.NewMsg(subject)
	msg.Data = fmt.Appendf(nil, `{"blob_id": %q, "metadata": {"n": %d}}`, blobID, i)
	msg.Header.Set(jetstream.MsgIDHeader, "bench-"+blobID)
	end := b.deltas.expect(blobID)
	sent := time.Now()
	if _, err := b.cjs.PublishMsg(ctx, msg); err != nil {
		b.deltas.forget(blobID)
		return sent, nil, nil, fmt.Errorf("bench: publish a blob event: %w", err)
	}
	return sent, end, func() { b.deltas.forget(blobID) }, nil
}

// latency times one thing at a time (cfg.Serial of them, within cfg.LatencyDuration), then at
// each offered load for cfg.LatencyDuration.
func (b *bench) latency(ctx context.Context, phase string, f fire) ([]Percentiles, error) {
	cfg := b.cfg
	var runs []Percentiles
	failedBase := b.ends.failed.Load()

	var (
		took []time.Duration
		lost int
	)
	b.progress(phase, "one at a time: %d samples within %s", cfg.Serial, cfg.LatencyDuration)
	began := time.Now()
	for i := 0; i < cfg.Serial && time.Since(began) < cfg.LatencyDuration; i++ {
		d, ok, err := b.timeOne(ctx, f, i)
		if err != nil {
			return nil, err
		}
		if ok {
			took = append(took, d)
		} else {
			lost++
		}
	}
	runs = append(runs, percentiles(0, took, lost))
	b.progress(phase, "one at a time: %s", describe(runs[len(runs)-1]))

	for _, load := range cfg.Loads {
		b.progress(phase, "%d/s for %s", load, cfg.LatencyDuration)
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			took []time.Duration
			lost int
			errs []error
		)
		every := time.Second / time.Duration(load)
		began := time.Now()
		n := int(cfg.LatencyDuration / every)
		for i := range n {
			// An open loop: each one leaves at its time, whatever the answers of the others.
			if wait := time.Until(began.Add(time.Duration(i) * every)); wait > 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(wait):
				}
			}
			wg.Go(func() {
				d, ok, err := b.timeOne(ctx, f, i)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					errs = append(errs, err)
				case ok:
					took = append(took, d)
				default:
					lost++
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, errs[0]
		}
		runs = append(runs, percentiles(load, took, lost))
		b.progress(phase, "%d/s: %s", load, describe(runs[len(runs)-1]))
	}
	if n := b.ends.failed.Load() - failedBase; n > 0 {
		return nil, fmt.Errorf("bench: %d executions of the %s runs failed", n, phase)
	}
	return runs, nil
}

// timeOne fires one and waits for its end: ok is false when it was lost (or failed).
func (b *bench) timeOne(ctx context.Context, f fire, i int) (time.Duration, bool, error) {
	sent, end, forget, err := f(ctx, i)
	if err != nil {
		return 0, false, err
	}
	t := time.NewTimer(lostAfter)
	defer t.Stop()
	select {
	case o := <-end:
		return o.at.Sub(sent), !o.failed, nil
	case <-t.C:
		forget()
		return 0, false, nil
	case <-ctx.Done():
		forget()
		return 0, false, ctx.Err()
	}
}

func describe(r Percentiles) string {
	return fmt.Sprintf("p50 %s ms, p95 %s ms, p99 %s ms, max %s ms over %d samples, %d lost", ms(r.P50), ms(r.P95), ms(r.P99),
		ms(r.Max), r.Samples, r.Lost)
}
