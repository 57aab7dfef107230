// Package blobstore reads and appends blobs' histories on MEMMIE_DELTAS: a blob's state is
// the fold of its deltas on memmie.deltas.<blob_id>, kept in a least-recently-used cache with
// the stream sequence of its last delta, and every append expects that sequence (optimistic
// concurrency), so that the versions of a blob stay gapless with several writers.
//
//	store, err := blobstore.New[blob.State](js, blobstore.Config{})
//	e, err := store.Get(ctx, blobID)            // cached, or folded from the stream
//	e, err = store.Append(ctx, e, deltas...)    // expects e.Seq; an ErrConflict: store.Fresh, decide again
//
// It folds with the state's own Apply (blob.State in memmie), so that it knows no core; it
// never decides what to append.
package blobstore

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// Defaults of Config.
const (
	DefaultCacheSize   = 10_000
	DefaultMaxDeltas   = 1_000_000
	DefaultLoadTimeout = 30 * time.Second
)

// ErrTooLarge is matched by the error of a load refused because the blob's history is longer
// than Config.MaxDeltas: the blob cannot be processed until the bound is raised.
var ErrTooLarge = errors.New("blob history too large to load")

// ErrUnreadable is matched by the error of a history that cannot be folded (a delta that does
// not decode or apply): the blob cannot be processed.
var ErrUnreadable = errors.New("unreadable blob history")

// State is a blob's state type: Apply records one delta (or refuses it, changing nothing) and
// Clone returns a deep copy. *blob.State is one.
type State[S any] interface {
	*S
	Apply(events.Delta) error
	Clone() S
}

// Config configures a Store.
type Config struct {
	// Stream is the deltas stream. Defaults to streams.Deltas.
	Stream string
	// CacheSize bounds the blob states held in memory. Defaults to DefaultCacheSize.
	CacheSize int
	// MaxDeltas bounds the history a load reads and folds: a blob with more deltas is refused
	// with ErrTooLarge, naming its version and the bound. Defaults to DefaultMaxDeltas
	// (1,000,000). A fold is linear in the deltas (blob.BenchmarkFold), so the bound is not
	// for the fold's time but for a load's memory: the history is read whole before it is
	// folded (stream.LoadAfter), its messages' bytes at once (a delta's old_value may reach
	// 64 KiB), on every cache miss. 100,000 small updates are 66 MB of messages, read in
	// about 2 s and folded in about 4 s on a busy 2-core machine. The read itself is bounded
	// by LoadTimeout.
	MaxDeltas int64
	// LoadTimeout bounds the read of one history. Defaults to DefaultLoadTimeout.
	LoadTimeout time.Duration
}

// Entry is a blob's state as of the stream sequence of its last delta.
type Entry[S any] struct {
	BlobID string
	State  S
	// Seq is the stream sequence of the blob's last delta, the expectation of the next
	// append; 0 for a blob without deltas.
	Seq uint64
}

// Store loads, caches and appends blob states. It is safe for concurrent use; the states it
// hands out are copies.
type Store[S any, P State[S]] struct {
	js  jetstream.JetStream
	cfg Config

	mu    sync.Mutex
	order *list.List // front: most recently used; values are *Entry[S]
	items map[string]*list.Element

	loads, hits, misses, conflicts uint64
}

// New checks cfg and returns a store on js.
func New[S any, P State[S]](js jetstream.JetStream, cfg Config) (*Store[S, P], error) {
	cfg.Stream = cmp.Or(cfg.Stream, streams.Deltas)
	cfg.CacheSize = cmp.Or(cfg.CacheSize, DefaultCacheSize)
	cfg.MaxDeltas = cmp.Or(cfg.MaxDeltas, DefaultMaxDeltas)
	cfg.LoadTimeout = cmp.Or(cfg.LoadTimeout, DefaultLoadTimeout)
	switch {
	case js == nil:
		return nil, errors.New("blobstore: no JetStream context")
	case cfg.CacheSize < 0:
		return nil, fmt.Errorf("blobstore: CacheSize %d is negative", cfg.CacheSize)
	case cfg.MaxDeltas < 0:
		return nil, fmt.Errorf("blobstore: MaxDeltas %d is negative", cfg.MaxDeltas)
	case cfg.LoadTimeout < time.Second:
		return nil, fmt.Errorf("blobstore: LoadTimeout %s is under a second", cfg.LoadTimeout)
	}
	return &Store[S, P]{js: js, cfg: cfg, order: list.New(), items: map[string]*list.Element{}}, nil
}

// Stats counts what a store did since it was created.
type Stats struct {
	// HistoryLoads counts the reads of a blob's history, whole or its tail after a conflict.
	HistoryLoads uint64 `json:"history_loads"`
	CacheHits    uint64 `json:"cache_hits"`
	CacheMisses  uint64 `json:"cache_misses"`
	// Conflicts counts appends refused because another writer appended first.
	Conflicts uint64 `json:"conflicts"`
}

// Stats returns the store's counters.
func (s *Store[S, P]) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{HistoryLoads: s.loads, CacheHits: s.hits, CacheMisses: s.misses, Conflicts: s.conflicts}
}

// Get returns the blob's state: the cached one without reading the stream (the next append
// checks it), else its history folded. A blob without deltas is the zero state at Seq 0.
func (s *Store[S, P]) Get(ctx context.Context, blobID string) (Entry[S], error) {
	if e, ok := s.cached(blobID); ok {
		return e, nil
	}
	return s.load(ctx, Entry[S]{BlobID: blobID})
}

// Fresh returns the blob's state as the stream holds it now: the cached one when its Seq is
// still the subject's last, else the cached one with the deltas after it applied (after a
// conflict, only the other writer's tail is read), else the whole history.
func (s *Store[S, P]) Fresh(ctx context.Context, blobID string) (Entry[S], error) {
	subject, err := events.DeltaSubject(blobID)
	if err != nil {
		return Entry[S]{}, fmt.Errorf("blob %q: %w", blobID, err)
	}
	e, ok := s.cached(blobID)
	if !ok {
		return s.load(ctx, Entry[S]{BlobID: blobID})
	}
	last, err := stream.LeaderLastBySubject(ctx, s.js, s.cfg.Stream, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		if e.Seq == 0 {
			return e, nil
		}
		// The stream lost the blob (purged): start over.
		s.forget(blobID)
		return Entry[S]{BlobID: blobID}, nil
	case err != nil:
		return Entry[S]{}, fmt.Errorf("check blob %s: %w", blobID, err)
	case last.Sequence == e.Seq:
		return e, nil
	}
	return s.load(ctx, e)
}

// Forget drops the blob's cached state: the next Get reads its history.
func (s *Store[S, P]) Forget(blobID string) { s.forget(blobID) }

// load reads the deltas of the blob after from.Seq and applies them to from.State (the zero
// state when from.Seq is 0), then caches the result.
func (s *Store[S, P]) load(ctx context.Context, from Entry[S]) (Entry[S], error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoadTimeout)
	defer cancel()
	subject, err := events.DeltaSubject(from.BlobID)
	if err != nil {
		return Entry[S]{}, fmt.Errorf("blob %q: %w", from.BlobID, err)
	}
	s.mu.Lock()
	s.loads++
	s.mu.Unlock()
	// The last delta's version is the history's length (versions are gapless): check the
	// bound before reading the history.
	last, err := stream.LeaderLastBySubject(ctx, s.js, s.cfg.Stream, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		e := Entry[S]{BlobID: from.BlobID}
		s.put(e)
		return e, nil
	}
	if err != nil {
		return Entry[S]{}, fmt.Errorf("load blob %s: %w", from.BlobID, err)
	}
	if from.Seq == 0 {
		d, err := decode(last)
		if err != nil {
			return Entry[S]{}, fmt.Errorf("%w %s: %v", ErrUnreadable, from.BlobID, err)
		}
		if d.Version > s.cfg.MaxDeltas {
			return Entry[S]{}, fmt.Errorf("load blob %s: %w: version %d, the store loads at most %d deltas (blobstore.Config.MaxDeltas)",
				from.BlobID, ErrTooLarge, d.Version, s.cfg.MaxDeltas)
		}
	}
	msgs, err := stream.LoadAfter(ctx, s.js, s.cfg.Stream, subject, from.Seq)
	if err != nil {
		return Entry[S]{}, fmt.Errorf("load blob %s: %w", from.BlobID, err)
	}
	e := Entry[S]{BlobID: from.BlobID, State: P(&from.State).Clone(), Seq: from.Seq}
	for i := range msgs {
		d, err := decode(&msgs[i])
		if err == nil {
			err = P(&e.State).Apply(d)
		}
		if err != nil {
			s.forget(from.BlobID)
			return Entry[S]{}, fmt.Errorf("%w %s: %v", ErrUnreadable, from.BlobID, err)
		}
		e.Seq = msgs[i].Sequence
	}
	s.put(e)
	return Entry[S]{BlobID: e.BlobID, State: P(&e.State).Clone(), Seq: e.Seq}, nil
}

func decode(m *jetstream.RawStreamMsg) (events.Delta, error) {
	ev, err := events.Decode(m.Data)
	if err != nil {
		return events.Delta{}, fmt.Errorf("message %d (%s): %w", m.Sequence, m.Subject, err)
	}
	d, ok := ev.Data.(*events.Delta)
	if !ok {
		return events.Delta{}, fmt.Errorf("message %d (%s): %s is not a delta", m.Sequence, m.Subject, ev.Type)
	}
	return *d, nil
}

// Event is the envelope of a delta, as the store appends it: its id is the delta's, which is
// its Nats-Msg-Id.
func Event(d events.Delta) (events.Event, error) {
	subject, err := events.DeltaSubject(d.BlobID)
	if err != nil {
		return events.Event{}, err
	}
	return events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subject,
		Time: d.Timestamp, Data: &d}, nil
}

// Append applies deltas to e's state and appends them in order, the first expecting e.Seq as
// the blob subject's last sequence and each next one the one before it, with Nats-Msg-Id the
// delta's id. It returns the entry after them, and caches it. When another writer appended
// first the error matches stream.ErrConflict: call Fresh and decide again. A delta that does
// not apply to the state is an error, and nothing is appended. An append cut short (a crash, a
// conflict after some deltas) leaves a prefix of the deltas on the stream, each recorded by
// its id: decide again on the fresh state.
func (s *Store[S, P]) Append(ctx context.Context, e Entry[S], deltas ...events.Delta) (Entry[S], error) {
	return s.AppendHeader(ctx, e, nil, deltas...)
}

// AppendHeader is Append with hdr (such as the trace context) on each delta's message.
func (s *Store[S, P]) AppendHeader(ctx context.Context, e Entry[S], hdr nats.Header, deltas ...events.Delta) (Entry[S], error) {
	if len(deltas) == 0 {
		return e, nil
	}
	subject, err := events.DeltaSubject(e.BlobID)
	if err != nil {
		return Entry[S]{}, fmt.Errorf("append to blob %q: %w", e.BlobID, err)
	}
	next := Entry[S]{BlobID: e.BlobID, State: P(&e.State).Clone()}
	msgs := make([]stream.Msg, len(deltas))
	for i, d := range deltas {
		if d.BlobID != e.BlobID {
			return Entry[S]{}, fmt.Errorf("append to blob %s: delta %s is of blob %q", e.BlobID, d.ID, d.BlobID)
		}
		if err := P(&next.State).Apply(d); err != nil {
			return Entry[S]{}, fmt.Errorf("append to blob %s: %w", e.BlobID, err)
		}
		ev, err := Event(d)
		if err != nil {
			return Entry[S]{}, fmt.Errorf("append to blob %s: %w", e.BlobID, err)
		}
		data, err := events.Marshal(ev)
		if err != nil {
			return Entry[S]{}, fmt.Errorf("append to blob %s: delta %s: %w", e.BlobID, d.ID, err)
		}
		msgs[i] = stream.Msg{Subject: subject, Data: data, ID: d.ID, Header: hdr}
	}
	ack, err := stream.AppendChained(ctx, s.js, s.cfg.Stream, msgs, stream.Expect{FilterSubject: subject, LastSubjectSeq: e.Seq})
	if err != nil {
		if errors.Is(err, stream.ErrConflict) {
			s.mu.Lock()
			s.conflicts++
			s.mu.Unlock()
			return Entry[S]{}, err
		}
		// The outcome is unknown (a timeout may have landed): the next Get reads the stream.
		s.forget(e.BlobID)
		return Entry[S]{}, fmt.Errorf("append to blob %s: %w", e.BlobID, err)
	}
	next.Seq = ack.LastSeq
	s.put(next)
	return Entry[S]{BlobID: next.BlobID, State: P(&next.State).Clone(), Seq: next.Seq}, nil
}

// AtVersion returns the blob at a version at or below e's: e's own state when it is at that
// version, else the first version deltas of its history folded (a read of the history).
func (s *Store[S, P]) AtVersion(ctx context.Context, e Entry[S], version int64, versionOf func(*S) int64) (S, error) {
	if versionOf(&e.State) == version {
		return P(&e.State).Clone(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoadTimeout)
	defer cancel()
	subject, err := events.DeltaSubject(e.BlobID)
	if err != nil {
		return *new(S), fmt.Errorf("blob %q: %w", e.BlobID, err)
	}
	if version > s.cfg.MaxDeltas {
		return *new(S), fmt.Errorf("blob %s at version %d: %w: the store loads at most %d deltas", e.BlobID, version, ErrTooLarge, s.cfg.MaxDeltas)
	}
	s.mu.Lock()
	s.loads++
	s.mu.Unlock()
	msgs, err := stream.Load(ctx, s.js, s.cfg.Stream, subject)
	if err != nil {
		return *new(S), fmt.Errorf("load blob %s: %w", e.BlobID, err)
	}
	var st S
	for i := range msgs {
		if versionOf(&st) == version {
			break
		}
		d, err := decode(&msgs[i])
		if err == nil {
			err = P(&st).Apply(d)
		}
		if err != nil {
			return *new(S), fmt.Errorf("%w %s: %v", ErrUnreadable, e.BlobID, err)
		}
	}
	if versionOf(&st) != version {
		return *new(S), fmt.Errorf("%w %s: no version %d in its history", ErrUnreadable, e.BlobID, version)
	}
	return st, nil
}

func (s *Store[S, P]) cached(blobID string) (Entry[S], bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.items[blobID]
	if !ok {
		s.misses++
		return Entry[S]{}, false
	}
	s.hits++
	s.order.MoveToFront(el)
	e := el.Value.(*Entry[S])
	// The cached state is never changed: callers get a copy.
	return Entry[S]{BlobID: e.BlobID, State: P(&e.State).Clone(), Seq: e.Seq}, true
}

func (s *Store[S, P]) put(e Entry[S]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.items[e.BlobID]; ok {
		// A slower writer must not put back an older state than the cache holds.
		if old := el.Value.(*Entry[S]); old.Seq > e.Seq {
			return
		}
		el.Value = &e
		s.order.MoveToFront(el)
		return
	}
	s.items[e.BlobID] = s.order.PushFront(&e)
	for s.order.Len() > s.cfg.CacheSize {
		last := s.order.Back()
		s.order.Remove(last)
		delete(s.items, last.Value.(*Entry[S]).BlobID)
	}
}

func (s *Store[S, P]) forget(blobID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.items[blobID]; ok {
		s.order.Remove(el)
		delete(s.items, blobID)
	}
}
