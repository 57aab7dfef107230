package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrStarted is returned by Start on a component that is running (or starting).
var ErrStarted = errors.New("already started")

// Service is the lifecycle of one component: its zero value is stopped. A component holds one
// and delegates its Start and Stop to it.
type Service struct {
	// Name prefixes the errors Start and Stop return ("lease dispatcher: already started").
	Name string

	mu       sync.Mutex
	starting bool
	stop     chan struct{}
	done     chan struct{}
	cancel   context.CancelFunc
}

// Start runs setup (the work a start must finish before it returns: a first lease acquisition,
// a view caught up), then run in a goroutine of its own. run finishes its work and returns
// once stop is closed; its ctx is cancelled when Stop gives up waiting, so that work in
// progress is cut short. It fails with ErrStarted when the component runs, and with setup's
// error, in which case the component stays stopped and run does not start. setup and run may
// be nil.
func (s *Service) Start(ctx context.Context, setup func(context.Context) error,
	run func(ctx context.Context, stop <-chan struct{})) error {
	s.mu.Lock()
	if s.starting || s.stop != nil {
		s.mu.Unlock()
		return s.errorf("%w", ErrStarted)
	}
	s.starting = true
	s.mu.Unlock()

	if setup != nil {
		if err := setup(ctx); err != nil {
			s.mu.Lock()
			s.starting = false
			s.mu.Unlock()
			return err
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop, done := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.starting = false
	s.stop, s.done, s.cancel = stop, done, cancel
	s.mu.Unlock()
	go func() {
		defer close(done)
		defer cancel()
		if run != nil {
			run(runCtx, stop)
		}
	}()
	return nil
}

// Running reports whether the component has started and not been stopped.
func (s *Service) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop != nil
}

// Stop closes run's stop channel and waits for run to return, then calls teardown (releasing
// what the component holds), which may be nil. When ctx ends first, Stop cancels run's
// context, waits for run to return, and returns ctx's error without tearing down. Stopping a
// stopped component does nothing.
func (s *Service) Stop(ctx context.Context, teardown func(context.Context) error) error {
	s.mu.Lock()
	stop, done, cancel := s.stop, s.done, s.cancel
	s.stop, s.done, s.cancel = nil, nil, nil
	s.mu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	select {
	case <-done:
	case <-ctx.Done():
		cancel()
		<-done
		return s.errorf("stop: %w", ctx.Err())
	}
	if teardown != nil {
		return teardown(ctx)
	}
	return nil
}

func (s *Service) errorf(format string, args ...any) error {
	if s.Name == "" {
		return fmt.Errorf(format, args...)
	}
	return fmt.Errorf(s.Name+": "+format, args...)
}

// Component is what a Group starts and stops.
type Component interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Group starts components in order and stops the started ones in reverse order, so that a
// component stops before those it depends on. Its zero value is empty.
type Group struct {
	mu      sync.Mutex
	started []Component
}

// Start starts c and, when that succeeds, adds it to the group.
func (g *Group) Start(ctx context.Context, c Component) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	g.Add(c)
	return nil
}

// Add adds a component started elsewhere: Stop stops it with the others.
func (g *Group) Add(c Component) {
	g.mu.Lock()
	g.started = append(g.started, c)
	g.mu.Unlock()
}

// Stop stops every component of the group, the last started first, each with ctx, and
// empties the group. It returns every error joined.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	started := g.started
	g.started = nil
	g.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Funcs is a Component made of two functions, for a composition root that starts and stops
// several parts as one (a handler and the lease it leads by). A nil function does nothing.
type Funcs struct {
	OnStart, OnStop func(context.Context) error
}

// Start calls OnStart.
func (f Funcs) Start(ctx context.Context) error {
	if f.OnStart == nil {
		return nil
	}
	return f.OnStart(ctx)
}

// Stop calls OnStop.
func (f Funcs) Stop(ctx context.Context) error {
	if f.OnStop == nil {
		return nil
	}
	return f.OnStop(ctx)
}
