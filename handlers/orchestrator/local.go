package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/faults"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// ErrNotLocal: the execution's inbox partition is not consumed by this orchestrator, or the
// orchestrator is stopping. The input goes to the inbox instead.
var ErrNotLocal = errors.New("the execution's partition is not consumed here")

// errRefused wraps what Record would have dead-lettered: sent to the inbox instead, the
// partition's consumer dead-letters it as it always has.
var errRefused = errors.New("input refused")

// lockStripes is the number of per-execution locks: enough that executions rarely share one.
const lockStripes = 1024

// lock returns the lock of an execution's inputs. An input is decided under it, from reading
// the cached state to putting the next one, so that the inputs the runner hands over
// (Record) and those the inbox delivers are decided one at a time, as the inbox's alone are.
func (o *Orchestrator) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &o.locks[h.Sum32()%lockStripes]
}

// partitionOf returns the inbox partition of an execution's commands. It is the server's
// partition() of the subject transform (streams.InboxConfig): FNV-1a of the execution id,
// modulo the partitions (TestPartitionOfIsTheServers checks it against the stored subjects).
func (o *Orchestrator) partitionOf(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(o.cfg.Partitions))
}

// localParts are the partitions whose inputs Record takes: those the orchestrator consumes,
// less those it is giving up.
type localParts struct {
	// mu is held for reading by every Record, and for writing to change on: a partition
	// taken off has no Record in progress once the change returns.
	mu sync.RWMutex
	on []bool // by partition
}

func (l *localParts) set(f func(on []bool)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l.on)
}

// Record decides on an input made in this process, the report of an attempt the runner made,
// as the consumer of its inbox partition would, and returns once the input and the decisions
// on it are appended (nil), or the input is found stale (nil: its effect is in the history
// already). The caller acknowledges what the input answers (the scheduled attempt) only then.
//
// It takes the input only while this orchestrator consumes the execution's partition and is
// not stopping; otherwise it returns ErrNotLocal at once. Any error but a crash means the
// input is not recorded here: send it to the inbox, as without Record (the append may have
// landed when the error came after it; the inbox's copy then finds itself applied). An error
// wrapping faults.ErrCrash is an injected crash (tests): abandon the work, as a dead process
// would.
//
// The append expects the execution's last sequence as every append does: another writer (a
// process that took the partition over, or still drains it) makes it conflict, and the input
// is decided again on the reloaded history, up to Config.MaxConflicts times.
func (o *Orchestrator) Record(ctx context.Context, executionID string, data []byte) error {
	if o.stopping.Load() {
		return ErrNotLocal
	}
	p := o.partitionOf(executionID)
	o.local.mu.RLock()
	defer o.local.mu.RUnlock()
	if p >= len(o.local.on) || !o.local.on[p] {
		return ErrNotLocal
	}
	if o.waiting.has(executionID) {
		// An input of the execution (a cancel, say) waits on the inbox to be tried again:
		// behind it, as the inbox would have it, not ahead of it.
		return fmt.Errorf("%w: an input of the execution waits on the inbox", ErrNotLocal)
	}
	ev, err := events.Decode(data)
	if err != nil {
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	switch {
	case !ev.Type.IsInput():
		return fmt.Errorf("%w: %s is not an execution input", errRefused, ev.Type)
	case ev.ExecutionID() != executionID:
		return fmt.Errorf("%w: input of execution %q handed over for %q", errRefused, ev.ExecutionID(), executionID)
	}
	now := o.cfg.Now()
	if t, ok := ev.Data.(*events.TimerFired); ok && now.Before(t.DueAt) {
		return fmt.Errorf("%w: the timer is not due", errRefused) // the inbox holds it
	}
	log := inputLog{base: o.log, executionID: executionID, input: ev.Type, eventID: ev.ID}
	out := o.run(ctx, log, p, executionID, ev, nil, now)
	switch out.kind {
	case recorded, dropped:
		o.handedOver.Add(1)
		return nil
	case abandoned:
		return fmt.Errorf("record %s: %w", ev.ID, faults.ErrCrash)
	case deadLettered:
		return fmt.Errorf("%w: %s", errRefused, out.reason)
	default:
		return fmt.Errorf("record %s: %w", ev.ID, out.err)
	}
}

// DefaultSeeds bounds the queued events Seed holds (Config.Seeds).
const DefaultSeeds = 10_000

// seed is an execution's queued event as its writer appended it, where its history was
// empty: the history as of Seq, unless another writer appended since.
type seed struct {
	msg       stream.Msg
	seq       uint64
	partition int
}

// seeds holds queued events until their execution's first input. It refuses new ones when
// full rather than evicting: the executions queued first are those started first.
type seeds struct {
	mu    sync.Mutex
	size  int
	items map[string]seed
}

func (s *seeds) put(id string, sd seed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.items) < s.size {
		s.items[id] = sd
	}
}

func (s *seeds) take(id string) (seed, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sd, ok := s.items[id]
	if ok {
		delete(s.items, id)
	}
	return sd, ok
}

func (s *seeds) removePartition(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sd := range s.items {
		if sd.partition == p {
			delete(s.items, id)
		}
	}
}

// Seed tells the orchestrator of an execution's queued event that this process has just
// appended, at stream sequence seq, to an execution that had no event (the append expected
// none and was not a duplicate). The execution's first input then starts from it rather than
// from a read of the stream. Seed keeps it only while the execution's partition is consumed
// here, and only up to Config.Seeds of them.
//
// The seed is trusted as any cached state is: the first input's append expects seq, so a
// history that moved on meanwhile makes it conflict, and the input is decided again on the
// history read from the stream. An input that does not apply to the queued state, or is
// stale against it, is decided again on the history read from the stream too, never
// dead-lettered or dropped on the seed's word.
func (o *Orchestrator) Seed(executionID string, msg stream.Msg, seq uint64) {
	if o.stopping.Load() || seq == 0 {
		return
	}
	p := o.partitionOf(executionID)
	o.local.mu.RLock()
	local := p < len(o.local.on) && o.local.on[p]
	o.local.mu.RUnlock()
	if !local {
		return
	}
	// Under the execution's lock, so that a seed never lands after its first input was
	// decided; when an input is being decided right now, there is nothing to seed.
	mu := o.lock(executionID)
	if !mu.TryLock() {
		return
	}
	defer mu.Unlock()
	if _, ok := o.cache.get(executionID); ok {
		return
	}
	o.seeds.put(executionID, seed{msg: msg, seq: seq, partition: p})
}

// fromSeed is the state a seed stands for.
func (o *Orchestrator) fromSeed(id string, sd seed) (entry, error) {
	if _, tail, err := events.ParseExecutionSubject(sd.msg.Subject); err != nil {
		return entry{}, fmt.Errorf("seed of %s: %w", id, err)
	} else if t, _ := events.TypeOfTail(tail); t != events.TypeExecutionQueued {
		return entry{}, fmt.Errorf("seed of %s: %s is not a queued event", id, sd.msg.Subject)
	}
	e, err := o.entryOf(id, []jetstream.RawStreamMsg{{Subject: sd.msg.Subject, Sequence: sd.seq, Header: sd.msg.Header, Data: sd.msg.Data}})
	if err != nil {
		return entry{}, err
	}
	e.partition = sd.partition
	return e, nil
}

func (s *seeds) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.items, id)
}

// waiting are the inbox inputs that were handed back to be tried again (a failed append),
// by execution and inbox sequence, until a delivery of theirs is settled. Record sends the
// reports of such an execution to the inbox, behind them, so that a report made here never
// overtakes a command accepted before it (a cancel during an outage of the executions stream).
type waiting struct {
	mu    sync.Mutex
	items map[string]map[uint64]struct{}
}

// set marks (on) or clears the inbox input at seq of an execution.
func (w *waiting) set(id string, seq uint64, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seqs := w.items[id]
	switch {
	case on && seqs == nil:
		w.items[id] = map[uint64]struct{}{seq: {}}
	case on:
		seqs[seq] = struct{}{}
	case seqs != nil:
		delete(seqs, seq)
		if len(seqs) == 0 {
			delete(w.items, id)
		}
	}
}

func (w *waiting) has(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.items[id]) > 0
}

// removePartition forgets the inputs of a partition given up: another process takes them.
func (w *waiting) removePartition(p int, partitionOf func(string) int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.items {
		if partitionOf(id) == p {
			delete(w.items, id)
		}
	}
}
