package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
)

// Config configures a Runner.
type Config struct {
	// Pool is the projections' database. Required.
	Pool *pgxpool.Pool
	// JS reads the stream. Required.
	JS jetstream.JetStream
	// DeadLetters records the messages that do not decode. Defaults to a writer on JS.
	DeadLetters *deadletter.Writer
	// BatchSize bounds the events of one transaction. Defaults to 1000.
	BatchSize int
	// BatchWait is how long a batch waits for more events once it has one. Defaults to 50ms.
	BatchWait time.Duration
	// RetryMin and RetryMax bound the backoff after a failure (Postgres or NATS unreachable):
	// it doubles from RetryMin up to RetryMax. Default to 100ms and 10s.
	RetryMin, RetryMax time.Duration
	// StandbyWait is how often a runner that does not hold the projection's lock tries to take
	// it. Defaults to 1s.
	StandbyWait time.Duration
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Runner feeds one projection from its checkpoint. Of all the runners of a projection, in
// every process, only the one that holds its advisory lock writes; the others stand by.
type Runner struct {
	p   Projection
	cfg Config
	log *slog.Logger

	// beforeCommit, when set (by tests), runs after a batch's rows and checkpoint are written
	// and before the commit.
	beforeCommit func(ctx context.Context)
	stats        runnerStats // see stats.go
}

// NewRunner returns a runner of p.
func NewRunner(p Projection, cfg Config) (*Runner, error) {
	switch {
	case p == nil:
		return nil, errors.New("projections: a projection is required")
	case cfg.Pool == nil:
		return nil, errors.New("projections: Config.Pool is required")
	case cfg.JS == nil:
		return nil, errors.New("projections: Config.JS is required")
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("projections: Config.BatchSize %d is negative", cfg.BatchSize)
	}
	if cfg.DeadLetters == nil {
		cfg.DeadLetters = deadletter.NewWriter(cfg.JS, deadletter.Config{})
	}
	cfg.BatchSize = orDefault(cfg.BatchSize, 1000)
	cfg.BatchWait = orDefault(cfg.BatchWait, 50*time.Millisecond)
	cfg.RetryMin = orDefault(cfg.RetryMin, 100*time.Millisecond)
	cfg.RetryMax = max(orDefault(cfg.RetryMax, 10*time.Second), cfg.RetryMin)
	cfg.StandbyWait = orDefault(cfg.StandbyWait, time.Second)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Runner{p: p, cfg: cfg, log: cfg.Log.With("projection", p.Name(), "stream", p.Stream())}, nil
}

func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// errStandby says that another runner holds the projection's lock.
var errStandby = errors.New("another runner holds the projection's lock")

// Run applies the stream to the projection until ctx is done, then returns nil. Failures
// (Postgres or NATS unreachable, the lock lost) are logged and retried with backoff; nothing
// but ctx ends it.
func (r *Runner) Run(ctx context.Context) error {
	backoff := r.cfg.RetryMin
	for {
		var wrote bool
		err := r.session(ctx, &wrote)
		if ctx.Err() != nil {
			return nil
		}
		if wrote {
			backoff = r.cfg.RetryMin // a new failure, not the old one lasting
		}
		wait := r.cfg.StandbyWait
		switch {
		case errors.Is(err, errStandby):
			r.log.Debug("projection standing by")
			backoff = r.cfg.RetryMin
		case errors.Is(err, errCheckpointMoved):
			r.log.Info("projection starting again from its new checkpoint", "err", err)
			wait, backoff = 0, r.cfg.RetryMin
		default:
			r.log.Warn("projection failed; retrying", "err", err, "in", backoff)
			wait, backoff = backoff, min(2*backoff, r.cfg.RetryMax)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// lockKey names the projection's advisory lock.
func lockKey(name string) string { return "memmie.projection." + name }

// session takes the lock on a connection of its own and applies batches on that connection
// until something fails; wrote says whether it committed a batch. Writing on the lock's
// connection means that a lost lock (the session died) fails the write too, so that a runner
// never writes without the lock.
func (r *Runner) session(ctx context.Context, wrote *bool) error {
	pc, err := r.cfg.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	// Hijacked, the connection never returns to the pool with the lock held; closing it
	// releases the lock.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, lockKey(r.p.Name())).Scan(&locked); err != nil {
		return fmt.Errorf("take the projection's lock: %w", err)
	}
	if !locked {
		return errStandby
	}
	r.log.Info("projection writing")

	if err := r.ensureCheckpoint(ctx, conn); err != nil {
		return err
	}
	last, err := r.checkpoint(ctx, conn)
	if err != nil {
		return err
	}
	msgs, fail, stop, err := r.consume(ctx, last+1)
	if err != nil {
		return err
	}
	defer stop()

	for {
		batch, err := r.collect(ctx, msgs, fail)
		if err != nil {
			return err
		}
		if last, err = r.write(ctx, conn, batch, last); err != nil {
			return err
		}
		*wrote = true
	}
}

// consume reads the stream from the sequence from on, decoding ahead on a goroutine of its own
// while the writer waits for Postgres. stop ends the reading and deletes the consumer.
func (r *Runner) consume(ctx context.Context, from uint64) (msgs <-chan item, fail <-chan error, stop func(), err error) {
	cons, err := r.cfg.JS.OrderedConsumer(ctx, r.p.Stream(), jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("consume %s: %w", r.p.Stream(), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(r.cfg.BatchSize), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("consume %s: %w", r.p.Stream(), err)
	}
	out := make(chan item, r.cfg.BatchSize)
	failed := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			m, err := it.Next()
			if err == nil {
				var md *jetstream.MsgMetadata
				if md, err = m.Metadata(); err == nil {
					ev, derr := events.Decode(m.Data())
					out <- item{msg: m, seq: md.Sequence.Stream, ev: ev, err: derr}
					continue
				}
			}
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				failed <- fmt.Errorf("consume %s: %w", r.p.Stream(), err)
			}
			return
		}
	}()
	stop = func() {
		it.Stop()
		for range out { // let the reader see the stop
		}
		// The next session starts a consumer of its own.
		deleteConsumer(ctx, r.cfg.JS, r.p.Stream(), cons)
	}
	return out, failed, stop, nil
}

// item is a message as the reader passes it on: decoded, or with the reason it does not decode.
type item struct {
	msg jetstream.Msg
	seq uint64
	ev  events.Event
	err error
}

// collect waits for a message, then for more until the batch is full or BatchWait ran out.
func (r *Runner) collect(ctx context.Context, msgs <-chan item, fail <-chan error) ([]item, error) {
	var batch []item
	var timeout <-chan time.Time
	for len(batch) < r.cfg.BatchSize {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-fail:
			return nil, err
		case <-timeout:
			return batch, nil
		case m, ok := <-msgs:
			if !ok {
				return nil, errors.New("consumer stopped")
			}
			batch = append(batch, m)
			if timeout == nil {
				timeout = time.After(r.cfg.BatchWait)
			}
		}
	}
	return batch, nil
}

// ensureCheckpoint makes the projection's checkpoint row, at 0, if it has none: every write
// locks that row first (see write), and a row that does not exist locks nothing.
func (r *Runner) ensureCheckpoint(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `INSERT INTO projection_checkpoints (projection, stream, last_seq) VALUES ($1, $2, 0)
		ON CONFLICT (projection, stream) DO NOTHING`, r.p.Name(), r.p.Stream()); err != nil {
		return fmt.Errorf("make the checkpoint: %w", err)
	}
	return nil
}

func (r *Runner) checkpoint(ctx context.Context, conn *pgx.Conn) (uint64, error) {
	var last int64
	err := conn.QueryRow(ctx, `SELECT last_seq FROM projection_checkpoints WHERE projection = $1 AND stream = $2`,
		r.p.Name(), r.p.Stream()).Scan(&last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the checkpoint: %w", err)
	}
	return uint64(last), nil
}

// errCheckpointMoved says that the checkpoint is not where the runner left it: a rebuild
// swapped its tables in (see Rebuild). The runner starts again from the new checkpoint.
var errCheckpointMoved = errors.New("the checkpoint moved under the runner (a rebuild swapped the tables in)")

// beginner is a connection, or a transaction in which write nests its own (a savepoint).
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// write applies a batch after the checkpoint last and moves the checkpoint to its end, in one
// transaction, and returns the new checkpoint. A message that does not decode, whose rows
// Postgres refuses or that the projection can never apply (see apply), is dead-lettered, and
// the checkpoint moves past it.
//
// The transaction begins by locking the checkpoint row and fails with errCheckpointMoved when
// it is not last. A rebuild's swap takes that lock first, too: a write waits for the swap to
// end, then sees the checkpoint it set, and no statement of it runs against a table the swap
// replaced (its statements run after the swap, and name the new tables).
func (r *Runner) write(ctx context.Context, db beginner, batch []item, last uint64) (uint64, error) {
	evs := make([]Event, 0, len(batch))
	msgs := make(map[uint64]jetstream.Msg, len(batch))
	next := last
	for _, m := range batch {
		if m.seq <= next {
			continue // at or below the checkpoint: applied already
		}
		next = m.seq
		if m.err != nil {
			if err := r.deadLetter(ctx, m.msg, m.seq, m.err); err != nil {
				return last, err
			}
			continue
		}
		evs = append(evs, Event{Event: m.ev, Seq: m.seq})
		msgs[m.seq] = m.msg
	}
	if next == last {
		return last, nil
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return last, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var at int64
	if err := tx.QueryRow(ctx, `SELECT last_seq FROM projection_checkpoints WHERE projection = $1 AND stream = $2 FOR UPDATE`,
		r.p.Name(), r.p.Stream()).Scan(&at); err != nil {
		return last, fmt.Errorf("lock the checkpoint: %w", err)
	}
	if uint64(at) != last {
		return last, fmt.Errorf("%w: at %d, not %d", errCheckpointMoved, at, last)
	}
	if len(evs) > 0 {
		if err := r.apply(ctx, tx, evs, msgs); err != nil {
			return last, fmt.Errorf("apply %d events up to %d: %w", len(evs), next, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (projection, stream, last_seq, updated_at)
		VALUES ($1, $2, $3, now())
		ON CONFLICT (projection, stream) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = now()`,
		r.p.Name(), r.p.Stream(), int64(next)); err != nil {
		return last, fmt.Errorf("write the checkpoint %d: %w", next, err)
	}
	if r.beforeCommit != nil {
		r.beforeCommit(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return last, fmt.Errorf("commit up to %d: %w", next, err)
	}
	r.stats.commit(next, time.Now())
	return next, nil
}

// apply applies evs in a savepoint. When Postgres refuses their data for good (a data exception
// or a violated constraint, such as a \u0000 that jsonb cannot hold), or the projection refuses
// one (a blob's delta out of version order), it halves the batch until
// it finds the events refused, dead-letters them and applies the rest: one such event must not
// stop the projection. Each half sees the rows the one before it wrote.
func (r *Runner) apply(ctx context.Context, tx pgx.Tx, evs []Event, msgs map[uint64]jetstream.Msg) error {
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return r.p.Apply(ctx, sp, evs) })
	if err == nil || !refused(err) {
		return err
	}
	if len(evs) == 1 {
		return r.deadLetter(ctx, msgs[evs[0].Seq], evs[0].Seq, err)
	}
	mid := len(evs) / 2
	if err := r.apply(ctx, tx, evs[:mid], msgs); err != nil {
		return err
	}
	return r.apply(ctx, tx, evs[mid:], msgs)
}

// refused reports whether Postgres refused the data itself (SQLSTATE classes 22 and 23), or the
// projection refused the event as one it can never apply (errUnappliable): no retry changes
// either.
func refused(err error) bool {
	if errors.Is(err, errUnappliable) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23"))
}

func (r *Runner) deadLetter(ctx context.Context, msg jetstream.Msg, seq uint64, reason error) error {
	if err := r.cfg.DeadLetters.Record(ctx, "projection-"+r.p.Name(), msg, reason.Error()); err != nil {
		return err
	}
	r.log.Error("projection: message dead-lettered", "seq", seq, "subject", msg.Subject(), "err", reason)
	return nil
}
