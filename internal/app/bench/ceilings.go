package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// The ceilings' stream, subjects and shapes.
const (
	ceilingStream  = "MEMMIE_BENCH_CEILING"
	ceilingSubject = "memmie_bench.ceiling"
	asyncWindow    = 1024
	upsertBatch    = 1000
	// upsertKeys are the ids the upserts cycle over: after the first rounds, each is an update.
	upsertKeys = 10 * upsertBatch
	copyRows   = 10_000
	// chainLength is the messages of one chain of the expect ceiling, as an execution of
	// three steps appends about a dozen.
	chainLength = 12
)

// ceilings measures the JetStream and Postgres ceilings.
func (b *bench) ceilings(ctx context.Context) (*Ceilings, error) {
	payload, err := samplePayload()
	if err != nil {
		return nil, err
	}
	c := &Ceilings{PayloadBytes: len(payload), AsyncWindow: asyncWindow, Concurrency: b.cfg.Concurrency, UpsertBatch: upsertBatch}
	for _, m := range []struct {
		name string
		into *float64
		run  func(context.Context, []byte) (float64, error)
	}{
		{"JetStream async publish", &c.AsyncPublish, b.asyncPublish},
		{"JetStream sync publish", &c.SyncPublish, func(ctx context.Context, p []byte) (float64, error) { return b.syncPublish(ctx, p, 1) }},
		{"JetStream sync publish, concurrent", &c.SyncPublishConcurrent, func(ctx context.Context, p []byte) (float64, error) {
			return b.syncPublish(ctx, p, b.cfg.Concurrency)
		}},
		{"publish with expected last subject sequence", &c.ExpectPublish, func(ctx context.Context, p []byte) (float64, error) {
			return b.expectPublish(ctx, p, 1)
		}},
		{"publish with expected last subject sequence, concurrent", &c.ExpectPublishConcurrent, func(ctx context.Context, p []byte) (float64, error) {
			return b.expectPublish(ctx, p, b.cfg.Concurrency)
		}},
		{"Postgres upsert", &c.PGUpsert, func(ctx context.Context, _ []byte) (float64, error) { return b.pgUpsert(ctx) }},
		{"Postgres COPY", &c.PGCopy, func(ctx context.Context, _ []byte) (float64, error) { return b.pgCopy(ctx) }},
	} {
		v, err := m.run(ctx, payload)
		if err != nil {
			return nil, fmt.Errorf("bench: ceiling of %s: %w", m.name, err)
		}
		*m.into = v
		unit := "msgs/s"
		if m.into == &c.PGUpsert || m.into == &c.PGCopy {
			unit = "rows/s"
		}
		b.progress("ceilings", "%s: %s", m.name, rate(v, unit))
	}
	if _, err := b.cfg.Pool.Exec(ctx, `DROP SCHEMA IF EXISTS memmie_bench CASCADE`); err != nil {
		return nil, fmt.Errorf("bench: drop the scratch schema: %w", err)
	}
	return c, nil
}

// samplePayload is a step's succeeded event as the engine stores it: the size of a typical
// message of MEMMIE_EXECUTIONS.
func samplePayload() ([]byte, error) {
	id := uuid.NewString()
	ev := events.NewExecution(&events.StepSucceeded{ExecutionID: id,
		AttemptRef: events.AttemptRef{Run: 1, StepID: "s2", Attempt: 1}, Output: map[string]any{"ok": true}},
		"bench", time.Now())
	b, err := events.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("bench: marshal a sample event: %w", err)
	}
	return b, nil
}

// withStream creates a fresh stream configured as MEMMIE_EXECUTIONS on the bench's subjects,
// runs f on it, and deletes it.
func (b *bench) withStream(ctx context.Context, f func() (float64, error)) (float64, error) {
	cfg, err := streams.Config(streams.Executions, b.cfg.Streams)
	if err != nil {
		return 0, err
	}
	cfg.Name, cfg.Subjects, cfg.Description = ceilingStream, []string{ceilingSubject + ".>"}, "memmie bench: ceilings"
	_ = b.js.DeleteStream(ctx, ceilingStream) // a stream left by a bench that died
	if _, err := b.js.CreateStream(ctx, cfg); err != nil {
		return 0, fmt.Errorf("create stream %s: %w", ceilingStream, err)
	}
	defer func() { _ = b.js.DeleteStream(context.WithoutCancel(ctx), ceilingStream) }()
	return f()
}

// asyncPublish keeps asyncWindow publishes in flight for the ceiling's time.
func (b *bench) asyncPublish(ctx context.Context, payload []byte) (float64, error) {
	return b.withStream(ctx, func() (float64, error) {
		prefix := nuid.Next()
		var window []jetstream.PubAckFuture
		wait := func(f jetstream.PubAckFuture) error {
			select {
			case <-f.Ok():
				return nil
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		began := time.Now()
		n := 0
		for time.Since(began) < b.cfg.Ceiling {
			if len(window) == asyncWindow {
				if err := wait(window[0]); err != nil {
					return 0, err
				}
				window = window[1:]
			}
			f, err := b.js.PublishAsync(fmt.Sprintf("%s.%d.x", ceilingSubject, n%1000), payload,
				jetstream.WithMsgID(fmt.Sprintf("%s-%d", prefix, n)))
			if err != nil {
				return 0, err
			}
			window = append(window, f)
			n++
		}
		for _, f := range window {
			if err := wait(f); err != nil {
				return 0, err
			}
		}
		return float64(n) / time.Since(began).Seconds(), nil
	})
}

// concurrently runs publishers publishers, each calling one until the ceiling's time is up,
// and returns the calls per second.
func (b *bench) concurrently(ctx context.Context, publishers int, one func(ctx context.Context, g, i int) error) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		n     atomic.Int64
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	began := time.Now()
	for g := range publishers {
		wg.Go(func() {
			for i := 0; time.Since(began) < b.cfg.Ceiling; i++ {
				if err := one(ctx, g, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n.Load()) / time.Since(began).Seconds(), nil
}

// syncPublish publishes and waits for each ack, on publishers publishers.
func (b *bench) syncPublish(ctx context.Context, payload []byte, publishers int) (float64, error) {
	return b.withStream(ctx, func() (float64, error) {
		prefix := nuid.Next()
		return b.concurrently(ctx, publishers, func(ctx context.Context, g, i int) error {
			_, err := b.js.Publish(ctx, fmt.Sprintf("%s.%d.%d", ceilingSubject, g, i%1000), payload,
				jetstream.WithMsgID(fmt.Sprintf("%s-%d-%d", prefix, g, i)))
			return err
		})
	})
}

// expectPublish appends as the engine appends an execution's events: stream.Append with the
// last sequence of the chain's subjects, one chain per publisher at a time, a new chain every
// chainLength messages.
func (b *bench) expectPublish(ctx context.Context, payload []byte, publishers int) (float64, error) {
	return b.withStream(ctx, func() (float64, error) {
		prefix := nuid.Next()
		last := make([]uint64, publishers)
		return b.concurrently(ctx, publishers, func(ctx context.Context, g, i int) error {
			chain := fmt.Sprintf("%s.%s-%d-%d", ceilingSubject, prefix, g, i/chainLength)
			if i%chainLength == 0 {
				last[g] = 0 // a new chain: nothing on its subjects yet
			}
			ack, err := stream.Append(ctx, b.js, ceilingStream, []stream.Msg{{
				Subject: fmt.Sprintf("%s.%d", chain, i%chainLength), Data: payload,
				ID: fmt.Sprintf("%s-%d-%d", prefix, g, i)}}, stream.Expect{FilterSubject: chain + ".>", LastSubjectSeq: last[g]})
			if err != nil {
				return err
			}
			last[g] = ack.LastSeq
			return nil
		})
	})
}

// executionColumns are the executions table's, as the projection writes them.
const executionColumns = `execution_id, workflow_id, workflow_revision, status, priority, input, output, error,
	run, provider_id, blob_id, queued_at, started_at, ended_at, updated_at`

// pgUpsert runs the executions projection's upsert, in batches of upsertBatch rows, into a
// copy of the executions table with its indexes.
func (b *bench) pgUpsert(ctx context.Context) (float64, error) {
	pool := b.cfg.Pool
	if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS memmie_bench;
		DROP TABLE IF EXISTS memmie_bench.upserts;
		CREATE TABLE memmie_bench.upserts (LIKE executions INCLUDING ALL)`); err != nil {
		return 0, fmt.Errorf("create the scratch table: %w", err)
	}
	keys := make([]uuid.UUID, upsertKeys)
	for i := range keys {
		keys[i] = uuid.New()
	}
	n := upsertBatch
	var (
		workflow, status        = make([]string, n), make([]string, n)
		revision, priority, run = make([]int32, n), make([]int32, n), make([]int32, n)
		input, output, provider = make([]string, n), make([]string, n), make([]string, n)
		errs, blob              = make([]*string, n), make([]*string, n)
		at                      = make([]time.Time, n)
	)
	began := time.Now()
	rows := 0
	for round := 0; time.Since(began) < b.cfg.Ceiling; round++ {
		from := (round * upsertBatch) % upsertKeys
		ids := keys[from : from+upsertBatch]
		now := time.Now()
		for i := range n {
			workflow[i], status[i] = "bench_steps", "completed"
			revision[i], priority[i], run[i] = 1, int32(i%100), 1
			input[i], output[i], provider[i] = fmt.Sprintf(`{"n": %d}`, i), `{"ok": true}`, "bench"
			at[i] = now
		}
		if _, err := pool.Exec(ctx, `INSERT INTO memmie_bench.upserts (`+executionColumns+`)
			SELECT id, wf, rev, st, prio, inp::jsonb, outp::jsonb, err::jsonb, run, prov, blob, q, s, e, u
			FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[],
				$9::int[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[],
				$15::timestamptz[])
				AS r(id, wf, rev, st, prio, inp, outp, err, run, prov, blob, q, s, e, u)
			ON CONFLICT (execution_id) DO UPDATE SET
				workflow_id = EXCLUDED.workflow_id, workflow_revision = EXCLUDED.workflow_revision,
				status = EXCLUDED.status, priority = EXCLUDED.priority, input = EXCLUDED.input,
				output = EXCLUDED.output, error = EXCLUDED.error, run = EXCLUDED.run,
				provider_id = EXCLUDED.provider_id, blob_id = EXCLUDED.blob_id, queued_at = EXCLUDED.queued_at,
				started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, updated_at = EXCLUDED.updated_at`,
			ids, workflow, revision, status, priority, input, output, errs, run, provider, blob, at, at, at, at); err != nil {
			return 0, fmt.Errorf("upsert: %w", err)
		}
		rows += n
	}
	return float64(rows) / time.Since(began).Seconds(), nil
}

// pgCopy copies copyRows rows at a time into a copy of the executions table without indexes.
func (b *bench) pgCopy(ctx context.Context) (float64, error) {
	pool := b.cfg.Pool
	if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS memmie_bench;
		DROP TABLE IF EXISTS memmie_bench.copies;
		CREATE TABLE memmie_bench.copies (LIKE executions INCLUDING DEFAULTS)`); err != nil {
		return 0, fmt.Errorf("create the scratch table: %w", err)
	}
	columns := []string{"execution_id", "workflow_id", "workflow_revision", "status", "priority", "input", "output",
		"error", "run", "provider_id", "blob_id", "queued_at", "started_at", "ended_at", "updated_at"}
	var took time.Duration
	rows := 0
	for took < b.cfg.Ceiling {
		at := time.Now()
		batch := make([][]any, copyRows)
		for i := range batch {
			// Typed as a rebuild's COPY types them, for pgx's binary encoding.
			batch[i] = []any{[16]byte(uuid.New()), "bench_steps", int32(1), "completed", int32(i % 100), `{"n": 1}`,
				`{"ok": true}`, nil, int32(1), "bench", nil, at, at, at, at}
		}
		began := time.Now()
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"memmie_bench", "copies"}, columns, pgx.CopyFromRows(batch))
		if err != nil {
			return 0, fmt.Errorf("copy: %w", err)
		}
		took += time.Since(began)
		rows += int(n)
	}
	return float64(rows) / took.Seconds(), nil
}
