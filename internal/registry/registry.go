package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
	"github.com/memmie/memmie/internal/lifecycle"
)

// Errors of Register, Deactivate and the readers.
var (
	// ErrNotFound: no definition of that kind and id (or no such revision) was ever registered.
	ErrNotFound = errors.New("definition not found")
	// ErrInUse: the definition to deactivate is named by an active definition.
	ErrInUse = errors.New("definition in use")
	// ErrNotStarted: the registry's view is not running (Start was not called, or Stop was).
	ErrNotStarted = errors.New("registry not started")
)

// Revision is one registered revision of a definition.
type Revision struct {
	Kind definitions.Kind
	ID   string
	// Revision counts the definition's registrations from 1.
	Revision int
	// Def is the decoded and compiled definition: a *definitions.Schema, *definitions.Workflow
	// or *definitions.Provider. Shared: never modify it.
	Def definitions.Definition
	// Canonical is the definition's canonical JSON (definitions.Canonical). Shared: never
	// modify it.
	Canonical json.RawMessage
	// Active is true while this revision is the definition's current one and the definition is
	// not deactivated. (A workflow may still say active: false in its own body; see
	// definitions.Workflow.IsActive.)
	Active bool
	// Seq is the stream sequence of the event that registered the revision.
	Seq uint64
	// Time is when it was registered.
	Time time.Time
}

// Config configures a Registry.
type Config struct {
	// Stream is the definitions stream. Defaults to streams.Definitions.
	Stream string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock of event times. Defaults to time.Now.
	Now func() time.Time
	// MaxAttempts bounds the tries of one registration that keeps conflicting with other
	// writers. Defaults to 10.
	MaxAttempts int
}

// Registry registers definitions and holds the view of every registered revision.
type Registry struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	// writeMu serialises this process's writes: they would only conflict with each other.
	writeMu sync.Mutex

	mu      sync.RWMutex
	entries map[key]*entry
	seq     uint64        // last stream sequence applied to the view
	moved   chan struct{} // closed and replaced whenever seq grows
	cons    jetstream.ConsumeContext
	life    lifecycle.Service
}

type key struct {
	kind definitions.Kind
	id   string
}

// entry is the view of one definition.
type entry struct {
	revisions map[int]*Revision
	current   *Revision
	active    bool
	// lastSeq is the sequence of the last event on the definition's subject: the expectation
	// of its next write.
	lastSeq uint64
}

// New returns a registry on js. Call Start before using it.
func New(js jetstream.JetStream, cfg Config) (*Registry, error) {
	if js == nil {
		return nil, errors.New("registry: no JetStream context")
	}
	if cfg.Stream == "" {
		cfg.Stream = streams.Definitions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	} else if cfg.MaxAttempts > 1000 {
		return nil, fmt.Errorf("registry: MaxAttempts %d: at most 1000", cfg.MaxAttempts)
	}
	return &Registry{
		life:    lifecycle.Service{Name: "registry"},
		js:      js,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "registry"),
		entries: map[key]*entry{},
		moved:   make(chan struct{}),
	}, nil
}

// Start reads the stream from its first message into the view, and returns once the view holds
// every message stored when Start was called; it then follows the stream until Stop. The stream
// must exist.
func (r *Registry) Start(ctx context.Context) error {
	return r.life.Start(ctx, r.follow, nil)
}

// follow starts following the stream and returns once the view has caught up.
func (r *Registry) follow(ctx context.Context) error {
	cons, err := r.js.OrderedConsumer(ctx, r.cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.SubjectDefinitions},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("registry: follow %s: %w", r.cfg.Stream, err)
	}
	cc, err := cons.Consume(r.apply, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		r.log.Warn("following the definitions stream", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("registry: follow %s: %w", r.cfg.Stream, err)
	}
	r.mu.Lock()
	r.cons = cc
	r.mu.Unlock()
	if err := r.Sync(ctx); err != nil {
		_ = r.unfollow(ctx)
		return err
	}
	r.log.Info("definitions view ready", "seq", r.Seq())
	return nil
}

// Stop stops following the stream. The view keeps what it holds.
func (r *Registry) Stop(ctx context.Context) error {
	return r.life.Stop(ctx, r.unfollow)
}

func (r *Registry) unfollow(ctx context.Context) error {
	r.mu.Lock()
	cc := r.cons
	r.cons = nil
	r.mu.Unlock()
	if cc == nil {
		return nil
	}
	cc.Stop()
	select {
	case <-cc.Closed():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("registry: stop: %w", ctx.Err())
	}
}

// Ready reports whether the view is following the stream and the stream is reachable.
func (r *Registry) Ready(ctx context.Context) error {
	r.mu.RLock()
	started := r.cons != nil
	r.mu.RUnlock()
	if !started {
		return ErrNotStarted
	}
	if st := r.js.Conn().Status(); st != nats.CONNECTED {
		return fmt.Errorf("registry: nats connection %s", st)
	}
	if _, err := r.lastStreamSeq(ctx); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// Seq returns the last stream sequence the view holds.
func (r *Registry) Seq() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.seq
}

// WaitFor returns once the view holds stream sequence seq (and everything before it).
func (r *Registry) WaitFor(ctx context.Context, seq uint64) error {
	for {
		r.mu.RLock()
		done, moved, running := r.seq >= seq, r.moved, r.cons != nil
		r.mu.RUnlock()
		if done {
			return nil
		}
		if !running {
			return fmt.Errorf("registry: wait for sequence %d: %w", seq, ErrNotStarted)
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("registry: wait for sequence %d (view at %d): %w", seq, r.Seq(), ctx.Err())
		}
	}
}

// Sync returns once the view holds every message the stream held when Sync was called.
func (r *Registry) Sync(ctx context.Context) error {
	last, err := r.lastStreamSeq(ctx)
	if err != nil {
		return fmt.Errorf("registry: sync: %w", err)
	}
	return r.WaitFor(ctx, last)
}

// lastStreamSeq returns the sequence of the last definition event, 0 when there is none.
func (r *Registry) lastStreamSeq(ctx context.Context) (uint64, error) {
	// From the stream leader: a lagging replica would let Sync return before a conflicting
	// registration is in the view, and the write retried on it would conflict again.
	m, err := stream.LeaderLastBySubject(ctx, r.js, r.cfg.Stream, events.SubjectDefinitions)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// Current returns the current revision of a definition. ok is false when it was never
// registered; a deactivated definition is returned with Active false.
func (r *Registry) Current(kind definitions.Kind, id string) (Revision, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[key{kind, id}]
	if e == nil || e.current == nil {
		return Revision{}, false
	}
	return e.revision(e.current), true
}

// Get returns one revision of a definition; ok is false when there is no such revision.
func (r *Registry) Get(kind definitions.Kind, id string, revision int) (Revision, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[key{kind, id}]
	if e == nil {
		return Revision{}, false
	}
	rev := e.revisions[revision]
	if rev == nil {
		return Revision{}, false
	}
	return e.revision(rev), true
}

// List returns the current revision of every definition of a kind, deactivated ones included,
// sorted by id.
func (r *Registry) List(kind definitions.Kind) []Revision {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Revision
	for k, e := range r.entries {
		if k.kind == kind && e.current != nil {
			out = append(out, e.revision(e.current))
		}
	}
	slices.SortFunc(out, func(a, b Revision) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// History returns every revision of a definition, oldest first.
func (r *Registry) History(kind definitions.Kind, id string) []Revision {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[key{kind, id}]
	if e == nil {
		return nil
	}
	out := make([]Revision, 0, len(e.revisions))
	for _, rev := range e.revisions {
		out = append(out, e.revision(rev))
	}
	slices.SortFunc(out, func(a, b Revision) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

// revision copies rev with Active set. Callers hold r.mu.
func (e *entry) revision(rev *Revision) Revision {
	out := *rev
	out.Active = e.active && rev == e.current
	return out
}

// apply feeds one message of the stream into the view. A message the view cannot use is logged
// and skipped, but still advances the view's sequence, so that WaitFor never hangs on it.
func (r *Registry) apply(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		r.log.Error("definition message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	if err := r.applyEvent(msg.Subject(), md.Sequence.Stream, md.Timestamp.UTC(), msg.Data()); err != nil {
		r.log.Error("skip definition event", "subject", msg.Subject(), "seq", md.Sequence.Stream, "err", err)
	}
	r.mu.Lock()
	if md.Sequence.Stream > r.seq {
		r.seq = md.Sequence.Stream
		close(r.moved)
		r.moved = make(chan struct{})
	}
	r.mu.Unlock()
}

func (r *Registry) applyEvent(subject string, seq uint64, at time.Time, data []byte) error {
	kindName, id, err := events.ParseDefinitionSubject(subject)
	if err != nil {
		return err
	}
	kind := definitions.Kind(kindName)
	// Decode and parse before taking the lock; then change the entry in one critical section,
	// so that a writer never sees a subject's last sequence without the revision it carries.
	ev, decodeErr := events.Decode(data)
	var rev *Revision
	if decodeErr == nil {
		if d, ok := ev.Data.(*events.DefinitionRegistered); ok {
			def, err := definitions.Parse(origin(kind, id), d.Definition, kind)
			if err != nil {
				decodeErr = fmt.Errorf("revision %d: %w", d.Revision, err)
			} else {
				rev = &Revision{Kind: kind, ID: id, Revision: d.Revision, Def: def, Canonical: d.Definition, Seq: seq, Time: at}
			}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{kind, id}
	e := r.entries[k]
	if e == nil {
		e = &entry{revisions: map[int]*Revision{}}
		r.entries[k] = e
	}
	e.lastSeq = seq // even when the event is skipped: it is the next write's expectation
	if decodeErr != nil {
		return decodeErr
	}
	switch d := ev.Data.(type) {
	case *events.DefinitionRegistered:
		if d.Kind != kindName || d.ID != id {
			return fmt.Errorf("event names %s %q on the subject of %s %q", d.Kind, d.ID, kindName, id)
		}
		if e.revisions[d.Revision] != nil {
			return fmt.Errorf("revision %d registered twice", d.Revision)
		}
		e.revisions[d.Revision] = rev
		if e.current == nil || d.Revision > e.current.Revision {
			e.current, e.active = rev, true
		}
	case *events.DefinitionDeactivated:
		if e.current == nil {
			return errors.New("deactivation of a definition never registered")
		}
		if d.Revision == e.current.Revision {
			e.active = false
		}
	default:
		return fmt.Errorf("unexpected event type %s", ev.Type)
	}
	return nil
}

// current returns the current revision of a definition and the sequence of the last event on
// its subject, read together: a write decided on the revision must expect that sequence.
func (r *Registry) current(kind definitions.Kind, id string) (rev Revision, ok bool, lastSeq uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[key{kind, id}]
	if e == nil {
		return Revision{}, false, 0
	}
	if e.current == nil {
		return Revision{}, false, e.lastSeq
	}
	return e.revision(e.current), true, e.lastSeq
}
