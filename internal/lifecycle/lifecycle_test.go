package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/lifecycle"
)

func TestServiceStartsOnceAndStopsItsRun(t *testing.T) {
	s := &lifecycle.Service{Name: "thing"}
	ctx := context.Background()
	ran := make(chan struct{})
	returned := make(chan struct{})
	require.NoError(t, s.Start(ctx, nil, func(_ context.Context, stop <-chan struct{}) {
		close(ran)
		<-stop
		close(returned)
	}))
	<-ran
	require.True(t, s.Running())

	err := s.Start(ctx, nil, nil)
	require.ErrorIs(t, err, lifecycle.ErrStarted)
	require.EqualError(t, err, "thing: already started")

	tornDown := false
	require.NoError(t, s.Stop(ctx, func(context.Context) error {
		select {
		case <-returned:
		default:
			t.Error("teardown ran before run returned")
		}
		tornDown = true
		return nil
	}))
	require.True(t, tornDown)
	require.False(t, s.Running())
	require.NoError(t, s.Stop(ctx, func(context.Context) error { t.Error("a second Stop tore down again"); return nil }))

	// Stopped, it starts again.
	require.NoError(t, s.Start(ctx, nil, func(_ context.Context, stop <-chan struct{}) { <-stop }))
	require.NoError(t, s.Stop(ctx, nil))
}

func TestServiceSetupFailureLeavesItStopped(t *testing.T) {
	s := &lifecycle.Service{}
	boom := errors.New("boom")
	err := s.Start(context.Background(), func(context.Context) error { return boom }, func(context.Context, <-chan struct{}) {
		t.Error("run started after a failed setup")
	})
	require.ErrorIs(t, err, boom)
	require.False(t, s.Running())
	require.NoError(t, s.Start(context.Background(), nil, nil), "a failed start does not leave it started")
	require.NoError(t, s.Stop(context.Background(), nil))
}

func TestServiceStartDuringSetupIsRefused(t *testing.T) {
	s := &lifecycle.Service{}
	inSetup, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.Start(context.Background(), func(context.Context) error { close(inSetup); <-release; return nil }, nil)
	}()
	<-inSetup
	require.ErrorIs(t, s.Start(context.Background(), nil, nil), lifecycle.ErrStarted)
	close(release)
	wg.Wait()
	require.NoError(t, s.Stop(context.Background(), nil))
}

func TestServiceStopGivesUpWithTheContext(t *testing.T) {
	s := &lifecycle.Service{Name: "slow"}
	var cut bool
	require.NoError(t, s.Start(context.Background(), nil, func(ctx context.Context, _ <-chan struct{}) {
		<-ctx.Done() // work that ignores stop and ends only when cut short
		cut = true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.Stop(ctx, func(context.Context) error { t.Error("teardown after a stop that gave up"); return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "slow: stop")
	require.True(t, cut, "Stop returned before run did")
}

type recorder struct {
	name     string
	log      *[]string
	startErr error
	stopErr  error
}

func (r recorder) Start(context.Context) error {
	if r.startErr != nil {
		return r.startErr
	}
	*r.log = append(*r.log, "start "+r.name)
	return nil
}

func (r recorder) Stop(context.Context) error {
	*r.log = append(*r.log, "stop "+r.name)
	return r.stopErr
}

func TestGroupStopsInReverse(t *testing.T) {
	var log []string
	var g lifecycle.Group
	ctx := context.Background()
	require.NoError(t, g.Start(ctx, recorder{name: "a", log: &log}))
	require.NoError(t, g.Start(ctx, recorder{name: "b", log: &log, stopErr: errors.New("b would not stop")}))
	boom := errors.New("c failed")
	require.ErrorIs(t, g.Start(ctx, recorder{name: "c", log: &log, startErr: boom}), boom)
	err := g.Stop(ctx)
	require.ErrorContains(t, err, "b would not stop")
	require.Equal(t, []string{"start a", "start b", "stop b", "stop a"}, log, "c never started, so it is not stopped")
	require.NoError(t, g.Stop(ctx), "the group is empty after Stop")
}

func TestFuncsInAGroup(t *testing.T) {
	var log []string
	var g lifecycle.Group
	ctx := context.Background()
	require.NoError(t, g.Start(ctx, lifecycle.Funcs{
		OnStart: func(context.Context) error { log = append(log, "start pair"); return nil },
		OnStop:  func(context.Context) error { log = append(log, "stop pair"); return nil },
	}))
	require.NoError(t, g.Start(ctx, lifecycle.Funcs{}), "nil functions do nothing")
	require.NoError(t, g.Stop(ctx))
	require.Equal(t, []string{"start pair", "stop pair"}, log)
}
