package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/jetstream/deadletter"
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// Pool is the projections' database. Required.
	Pool *pgxpool.Pool
	// JS reads the stream. Required.
	JS jetstream.JetStream
	// DeadLetters records the messages that do not decode. Defaults to a writer on JS.
	DeadLetters *deadletter.Writer
	// BatchSize bounds the events of one transaction. Defaults to 1000.
	BatchSize int
	// SwapLag is how close to the stream's end the tail is caught up before the swap, which
	// applies the rest while it holds the live runner back. Defaults to 1000 events.
	SwapLag int
	// Progress, when set, is called at the end of each phase.
	Progress func(Progress)
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Progress is where a rebuild stands at the end of a phase.
type Progress struct {
	Projection string
	// Phase is PhaseReplayed, PhaseCaughtUp or PhaseSwapped.
	Phase string
	// Events is how many events the rebuild has read so far, Seq the stream sequence its
	// tables hold.
	Events int
	Seq    uint64
	// Elapsed is the time since the rebuild began.
	Elapsed time.Duration
}

// The phases of a rebuild.
const (
	// PhaseReplayed: the stream, as it was when the rebuild began, is in the fresh tables.
	PhaseReplayed = "replayed"
	// PhaseCaughtUp: the tail written since then is in them too, but for SwapLag events.
	PhaseCaughtUp = "caught up"
	// PhaseSwapped: the fresh tables replaced the live ones.
	PhaseSwapped = "swapped"
)

// RebuildResult says what a rebuild did.
type RebuildResult struct {
	Projection string
	// Replayed is the events of the replay (the stream as it was when the rebuild began), and
	// ReplayTook its time: the projection's apply rate.
	Replayed   int
	ReplayTook time.Duration
	// Events is every event the rebuild read, the tail's included.
	Events int
	// Seq is the checkpoint after the swap.
	Seq  uint64
	Took time.Duration
}

// Rate is the replay's events per second.
func (r RebuildResult) Rate() float64 {
	if r.ReplayTook <= 0 {
		return 0
	}
	return float64(r.Replayed) / r.ReplayTook.Seconds()
}

// ErrRebuildRunning says that another rebuild of the projection holds its rebuild lock.
var ErrRebuildRunning = errors.New("another rebuild of the projection is running")

// tabled is a projection that names the tables it writes. A projection without it writes the
// one table named after it.
type tabled interface {
	Tables() []string
}

// tablesOf are the tables p writes, each written by p alone.
func tablesOf(p Projection) []string {
	if t, ok := p.(tabled); ok {
		return t.Tables()
	}
	return []string{p.Name()}
}

// maxTailRounds bounds the rounds of catching up the tail before the swap, which applies what
// is left.
const maxTailRounds = 10

// rebuildLockKey names the advisory lock a rebuild of the projection holds.
func rebuildLockKey(name string) string { return "memmie.projection-rebuild." + name }

// rebuildSchema is the schema where a rebuild of the projection builds its tables.
func rebuildSchema(name string) string { return "memmie_rebuild_" + name }

// Rebuild replays p's stream from the first message into fresh tables while the live ones keep
// serving, catches up the tail and swaps the fresh tables in; see the package doc. It returns
// ErrRebuildRunning when another rebuild of p is running.
func Rebuild(ctx context.Context, p Projection, cfg RebuildConfig) (RebuildResult, error) {
	began := time.Now()
	res := RebuildResult{Projection: p.Name()}
	switch {
	case cfg.Pool == nil:
		return res, errors.New("projections: RebuildConfig.Pool is required")
	case cfg.SwapLag < 0:
		return res, fmt.Errorf("projections: RebuildConfig.SwapLag %d is negative", cfg.SwapLag)
	}
	cfg.SwapLag = orDefault(cfg.SwapLag, 1000)
	r, err := NewRunner(p, Config{Pool: cfg.Pool, JS: cfg.JS, DeadLetters: cfg.DeadLetters, BatchSize: cfg.BatchSize, Log: cfg.Log})
	if err != nil {
		return res, err
	}
	progress := func(phase string, seq uint64) {
		r.log.Info("rebuild: "+phase, "events", res.Events, "seq", seq)
		if cfg.Progress != nil {
			cfg.Progress(Progress{Projection: p.Name(), Phase: phase, Events: res.Events, Seq: seq, Elapsed: time.Since(began)})
		}
	}

	pc, err := cfg.Pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("rebuild %s: connect to postgres: %w", p.Name(), err)
	}
	// Hijacked: the connection's search_path and lock never go back to the pool.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, rebuildLockKey(p.Name())).Scan(&locked); err != nil {
		return res, fmt.Errorf("rebuild %s: take the rebuild lock: %w", p.Name(), err)
	}
	if !locked {
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), ErrRebuildRunning)
	}

	b, err := prepare(ctx, conn, p)
	if err != nil {
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	defer func() {
		// After a swap only the build's checkpoint is left there; after a failure, its tables.
		dropCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := conn.Exec(dropCtx, `DROP SCHEMA IF EXISTS `+b.schema+` CASCADE`); err != nil {
			r.log.Warn("rebuild: drop the build's schema", "schema", b.schema, "err", err)
		}
	}()
	if err := r.ensureCheckpoint(ctx, conn); err != nil { // the build's own, in its schema
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}

	// The replay: the stream as it is now.
	replayed := time.Now()
	target, held, err := streamEnd(ctx, cfg.JS, p.Stream())
	if err != nil {
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	var last uint64
	bf, fast := p.(bulkFolder)
	if fast {
		last, err = r.replayBulk(ctx, conn, bf.newBulk(), target)
		res.Events = held // read, or passed over unread
		if err != nil && !refused(err) {
			return res, fmt.Errorf("rebuild %s: replay: %w", p.Name(), err)
		}
		if err != nil {
			// Postgres refuses a row: the batches' halving finds its event and dead-letters it.
			r.log.Warn("rebuild: a row refused; replaying in batches", "err", err)
			fast, last, res.Events = false, 0, 0
		}
	}
	if err := b.createIndexes(ctx, conn); err != nil {
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	msgs, fail, stop, err := r.consume(ctx, last+1)
	if err != nil {
		return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	defer stop()
	if !fast {
		if last, err = r.catchUp(ctx, conn, msgs, fail, last, target, &res.Events); err != nil {
			return res, fmt.Errorf("rebuild %s: replay: %w", p.Name(), err)
		}
	}
	res.Replayed, res.ReplayTook = res.Events, time.Since(replayed)
	progress(PhaseReplayed, last)

	// The tail, written meanwhile, up to SwapLag events from the stream's end; a few rounds at
	// most, so that writers faster than the rebuild do not keep it from the swap.
	for range maxTailRounds {
		if target, err = lastSeq(ctx, cfg.JS, p.Stream()); err != nil {
			return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
		}
		if target <= last+uint64(cfg.SwapLag) {
			break
		}
		if last, err = r.catchUp(ctx, conn, msgs, fail, last, target, &res.Events); err != nil {
			return res, fmt.Errorf("rebuild %s: tail: %w", p.Name(), err)
		}
	}
	progress(PhaseCaughtUp, last)

	if last, err = r.swap(ctx, conn, b, msgs, fail, last, &res.Events); err != nil {
		return res, fmt.Errorf("rebuild %s: swap: %w", p.Name(), err)
	}
	res.Seq, res.Took = last, time.Since(began)
	progress(PhaseSwapped, last)
	return res, nil
}

// build is where a rebuild builds: its schema, first in the connection's search_path, holds
// a fresh table of each of the projection's tables and a projections_checkpoints of its own,
// so that the projection's SQL, which names its tables without a schema, writes there.
type build struct {
	schema string // quoted
	// live are the live tables, schema-qualified and quoted; schemas their schemas, quoted;
	// names their bare names.
	live, schemas, names []string
	checkpoints          string // the live projection_checkpoints, qualified and quoted
	indexes              []string
}

// prepare makes the build's schema, empty, its tables (without their indexes: see
// createIndexes) and checkpoint table, and puts the schema first in conn's search_path.
func prepare(ctx context.Context, conn *pgx.Conn, p Projection) (*build, error) {
	b := &build{schema: pgx.Identifier{rebuildSchema(p.Name())}.Sanitize()}
	var err error
	if _, b.checkpoints, err = qualified(ctx, conn, "projection_checkpoints"); err != nil {
		return nil, err
	}
	// Left by a rebuild that died: no other one runs (the rebuild lock).
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+b.schema+` CASCADE`); err != nil {
		return nil, fmt.Errorf("drop the schema of an earlier build: %w", err)
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+b.schema); err != nil {
		return nil, fmt.Errorf("make the build's schema: %w", err)
	}
	for _, name := range tablesOf(p) {
		schema, live, err := qualified(ctx, conn, name)
		if err != nil {
			return nil, err
		}
		fresh := b.schema + "." + pgx.Identifier{name}.Sanitize()
		if _, err := conn.Exec(ctx, `CREATE TABLE `+fresh+` (LIKE `+live+` INCLUDING ALL EXCLUDING INDEXES)`); err != nil {
			return nil, fmt.Errorf("make the fresh %s: %w", name, err)
		}
		idx, err := indexes(ctx, conn, live, fresh)
		if err != nil {
			return nil, err
		}
		b.live, b.schemas, b.names = append(b.live, live), append(b.schemas, schema), append(b.names, name)
		b.indexes = append(b.indexes, idx...)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE `+b.schema+`.projection_checkpoints (LIKE `+b.checkpoints+` INCLUDING ALL)`); err != nil {
		return nil, fmt.Errorf("make the build's checkpoints: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), false)`,
		b.schema); err != nil {
		return nil, fmt.Errorf("set the search path: %w", err)
	}
	return b, nil
}

// qualified returns the schema of the table that name resolves to in conn's search path and
// the table qualified by it, both quoted (as pg_get_indexdef quotes them).
func qualified(ctx context.Context, conn *pgx.Conn, name string) (schema, table string, err error) {
	var s, q *string
	err = conn.QueryRow(ctx, `SELECT quote_ident(n.nspname), quote_ident(n.nspname) || '.' || quote_ident(c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
		pgx.Identifier{name}.Sanitize()).Scan(&s, &q)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && q == nil {
		return "", "", fmt.Errorf("no table %s: migrate the database first (memmie migrate)", name)
	}
	if err != nil {
		return "", "", fmt.Errorf("find the table %s: %w", name, err)
	}
	return *s, *q, nil
}

// indexes returns the statements that make on fresh the indexes and the constraints backed by
// an index (primary key, unique) of live, under the same names: the names are free in the
// build's schema, and are live's again once the swap moves fresh in.
func indexes(ctx context.Context, conn *pgx.Conn, live, fresh string) ([]string, error) {
	rs, err := conn.Query(ctx, `SELECT pg_get_indexdef(i.indexrelid), c.conname, pg_get_constraintdef(c.oid)
		FROM pg_index i
		LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')
		WHERE i.indrelid = $1::regclass ORDER BY c.contype NULLS LAST, i.indexrelid`, live)
	if err != nil {
		return nil, fmt.Errorf("read the indexes of %s: %w", live, err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var (
			def            string
			conname, cndef *string
		)
		if err := rs.Scan(&def, &conname, &cndef); err != nil {
			return nil, fmt.Errorf("read the indexes of %s: %w", live, err)
		}
		if conname != nil {
			out = append(out, `ALTER TABLE `+fresh+` ADD CONSTRAINT `+pgx.Identifier{*conname}.Sanitize()+` `+*cndef)
			continue
		}
		on := " ON " + live + " "
		if !strings.Contains(def, on) {
			return nil, fmt.Errorf("index of %s: cannot read %q", live, def)
		}
		out = append(out, strings.Replace(def, on, " ON "+fresh+" ", 1))
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read the indexes of %s: %w", live, err)
	}
	return out, nil
}

func (b *build) createIndexes(ctx context.Context, conn *pgx.Conn) error {
	for _, stmt := range b.indexes {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("make an index of the fresh tables (%s): %w", stmt, err)
		}
	}
	return nil
}

// replayChunk is a run of messages of a replay, decoded by one of the workers.
type replayChunk struct {
	items []replayItem
	done  chan struct{} // closed once decoded
}

// replayItem is an item that the replay may pass over (see typed).
type replayItem struct {
	item
	skip bool
}

// replayBulk reads the stream from the first message up to target, decoding on as many
// goroutines as there are CPUs, folds it in stream order into f and writes f's rows with the
// build's checkpoint, and returns the checkpoint. The fresh tables must be empty and, for
// COPY's speed, without their indexes.
func (r *Runner) replayBulk(ctx context.Context, conn *pgx.Conn, f bulkFold, target uint64) (uint64, error) {
	var last uint64
	if target > 0 {
		var err error
		if last, err = r.foldStream(ctx, f, target); err != nil {
			return 0, err
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := f.copy(ctx, tx); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_checkpoints SET last_seq = $3, updated_at = now()
		WHERE projection = $1 AND stream = $2`, r.p.Name(), r.p.Stream(), int64(last)); err != nil {
		return 0, fmt.Errorf("write the checkpoint %d: %w", last, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit up to %d: %w", last, err)
	}
	return last, nil
}

// foldStream folds the stream up to target into f and returns the last sequence folded. A
// message that does not decode is dead-lettered. The server passes over the subjects that name
// no type f's projection folds (see replayFilter), and the reader, undecoded, over the
// subjects of the types it does not fold (see skipper): decoding and delivering them is most of
// a replay's time. The reader's last message is the one at target, or the last one that
// matches the filters (none matches after it: its NumPending is 0).
func (r *Runner) foldStream(ctx context.Context, f bulkFold, target uint64) (uint64, error) {
	const chunkSize = 256
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute}
	if f := replayFilter(r.p); f != "" {
		cfg.FilterSubjects = []string{f}
	}
	cons, err := r.cfg.JS.OrderedConsumer(ctx, r.p.Stream(), cfg)
	if err != nil {
		return 0, fmt.Errorf("consume %s: %w", r.p.Stream(), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(replayPull))
	if err != nil {
		return 0, fmt.Errorf("consume %s: %w", r.p.Stream(), err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		it.Stop() // nothing matches: the replay passes over the whole stream
		deleteConsumer(ctx, r.cfg.JS, r.p.Stream(), cons)
		return target, nil
	}
	workers := runtime.GOMAXPROCS(0)
	skips := skipper(r.p)
	var (
		work    = make(chan *replayChunk, workers)
		ordered = make(chan *replayChunk, 2*workers)
		failed  = make(chan error, 1)
		quit    = make(chan struct{})
		reached bool // by the reader, before it closes ordered
		wg      sync.WaitGroup
	)
	defer func() {
		close(quit)
		it.Stop()
		wg.Wait()
		deleteConsumer(ctx, r.cfg.JS, r.p.Stream(), cons)
	}()
	wg.Go(func() { // the reader
		defer close(work)
		defer close(ordered)
		for end := false; !end; {
			c := &replayChunk{done: make(chan struct{})}
			for len(c.items) < chunkSize && !end {
				m, err := it.Next()
				var md *jetstream.MsgMetadata
				if err == nil {
					md, err = m.Metadata()
				}
				if err != nil {
					if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						failed <- fmt.Errorf("consume %s: %w", r.p.Stream(), err)
					}
					return
				}
				if md.Sequence.Stream > target {
					end = true // written since the replay began: the tail's
					break
				}
				c.items = append(c.items, replayItem{item: item{msg: m, seq: md.Sequence.Stream}})
				end = md.Sequence.Stream == target || md.NumPending == 0
			}
			reached = end
			for _, ch := range []chan *replayChunk{ordered, work} {
				select {
				case ch <- c:
				case <-quit:
					return
				}
			}
		}
	})
	for range workers {
		wg.Go(func() {
			for c := range work {
				for i := range c.items {
					m := &c.items[i]
					if m.skip = skips(m.msg.Subject()); !m.skip {
						m.ev, m.err = events.Decode(m.msg.Data())
					}
				}
				close(c.done)
			}
		})
	}

	var last uint64
	for c := range ordered {
		if len(c.items) == 0 {
			continue
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return last, ctx.Err()
		}
		for _, m := range c.items {
			last = m.seq
			if m.skip {
				continue
			}
			if m.err != nil {
				if err := r.deadLetter(ctx, m.msg, m.seq, m.err); err != nil {
					return last, err
				}
				continue
			}
			f.fold(Event{Event: m.ev, Seq: m.seq})
		}
	}
	select {
	case err := <-failed:
		return last, err
	default:
	}
	if !reached {
		return last, fmt.Errorf("consume %s: ended at %d, before %d", r.p.Stream(), last, target)
	}
	// Past the last message that matches, up to target, none names a type f folds.
	return target, nil
}

// replayPull is how many messages a replay's reader asks the server for at a time.
const replayPull = 8192

// deleteConsumer deletes cons, which would otherwise linger until its inactivity threshold.
func deleteConsumer(ctx context.Context, js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	if info := cons.CachedInfo(); info != nil {
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = js.DeleteConsumer(delCtx, stream, info.Name)
		cancel()
	}
}

// lastSeq is the stream's last sequence.
func lastSeq(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	last, _, err := streamEnd(ctx, js, name)
	return last, err
}

// streamEnd is the stream's last sequence and how many messages it holds up to it.
func streamEnd(ctx context.Context, js jetstream.JetStream, name string) (last uint64, msgs int, err error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, 0, fmt.Errorf("read the stream %s: %w", name, err)
	}
	st := s.CachedInfo().State
	return st.LastSeq, int(st.Msgs), nil
}

// catchUp writes batches from msgs after the checkpoint last until it reaches target, a
// sequence the stream held, and returns the new checkpoint; read counts the messages read.
func (r *Runner) catchUp(ctx context.Context, db beginner, msgs <-chan item, fail <-chan error, last, target uint64,
	read *int) (uint64, error) {
	for last < target {
		batch, err := r.collectUpTo(ctx, msgs, fail, target)
		if err != nil {
			return last, err
		}
		*read += len(batch)
		if last, err = r.write(ctx, db, batch, last); err != nil {
			return last, err
		}
	}
	return last, nil
}

// collectUpTo is collect that also ends a batch at the message target, rather than wait for
// more.
func (r *Runner) collectUpTo(ctx context.Context, msgs <-chan item, fail <-chan error, target uint64) ([]item, error) {
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
			if m.seq >= target {
				return batch, nil
			}
			if timeout == nil {
				timeout = time.After(r.cfg.BatchWait)
			}
		}
	}
	return batch, nil
}

// swap, in one transaction, holds the live runner back, applies the rest of the tail to the
// fresh tables, drops the live ones, moves the fresh ones in their place and moves the live
// checkpoint to the fresh tables' one, which it returns.
func (r *Runner) swap(ctx context.Context, conn *pgx.Conn, b *build, msgs <-chan item, fail <-chan error, last uint64,
	read *int) (uint64, error) {
	// Every write of a runner locks its checkpoint row first: the row must exist.
	if _, err := conn.Exec(ctx, `INSERT INTO `+b.checkpoints+` (projection, stream, last_seq) VALUES ($1, $2, 0)
		ON CONFLICT (projection, stream) DO NOTHING`, r.p.Name(), r.p.Stream()); err != nil {
		return last, fmt.Errorf("make the live checkpoint: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return last, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The live runner's writes wait from here on, and find the checkpoint moved.
	var live int64
	if err := tx.QueryRow(ctx, `SELECT last_seq FROM `+b.checkpoints+` WHERE projection = $1 AND stream = $2 FOR UPDATE`,
		r.p.Name(), r.p.Stream()).Scan(&live); err != nil {
		return last, fmt.Errorf("lock the live checkpoint: %w", err)
	}
	target, err := lastSeq(ctx, r.cfg.JS, r.p.Stream())
	if err != nil {
		return last, err
	}
	// The fresh tables may not end behind the live ones: a reader would see rows go back.
	target = max(target, uint64(live))
	if last, err = r.catchUp(ctx, tx, msgs, fail, last, target, read); err != nil {
		return last, fmt.Errorf("the tail up to %d: %w", target, err)
	}
	for i, live := range b.live {
		// The readers of the live table finish first; those that come after wait, then read
		// the fresh one.
		if _, err := tx.Exec(ctx, `LOCK TABLE `+live+` IN ACCESS EXCLUSIVE MODE`); err != nil {
			return last, fmt.Errorf("lock %s: %w", live, err)
		}
		if _, err := tx.Exec(ctx, `DROP TABLE `+live); err != nil {
			return last, fmt.Errorf("drop the live %s: %w", live, err)
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE `+b.schema+`.`+pgx.Identifier{b.names[i]}.Sanitize()+` SET SCHEMA `+b.schemas[i]); err != nil {
			return last, fmt.Errorf("move the fresh %s in: %w", b.names[i], err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE `+b.checkpoints+` SET last_seq = $3, updated_at = now()
		WHERE projection = $1 AND stream = $2`, r.p.Name(), r.p.Stream(), int64(last)); err != nil {
		return last, fmt.Errorf("move the live checkpoint to %d: %w", last, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return last, fmt.Errorf("commit: %w", err)
	}
	return last, nil
}
