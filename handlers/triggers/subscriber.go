package triggers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/internal/jetstream/consume"
)

// errNacked is the retry reason of a request the router nacked (its handler failed).
var errNacked = errors.New("the trigger matcher's handler failed")

// subscriber is the router's message.Subscriber: memmie's consume loop on the durable
// consumer of the requests, handing each delivery to the router and settling it by the
// router's verdict (ack, or nack: retried after the loop's backoff).
//
// It replaces watermill-nats' JetStream subscriber, which closes its output channel while a
// NATS callback may still be sending on it (a data race the race detector reported here, and
// a "send on closed channel" panic when the select picks the send), and which sends no
// progress for the requests it holds. The loop pulls only for free workers, sends progress
// for the requests in flight, and closes the channel once no worker can send on it.
type subscriber struct {
	loop *consume.Loop
	out  chan *message.Message

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: the workers stop handing requests over
	closed    chan struct{} // closed once the loop has stopped and out is closed
	stopCtx   func() (context.Context, context.CancelFunc)
}

// newSubscriber returns the subscriber of one consumer; Subscribe starts it.
func newSubscriber(js jetstream.JetStream, cfg consume.Config, stopTimeout time.Duration) (*subscriber, error) {
	s := &subscriber{
		out:     make(chan *message.Message),
		closing: make(chan struct{}),
		closed:  make(chan struct{}),
		stopCtx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), stopTimeout)
		},
	}
	loop, err := consume.New(js, cfg, s.hand)
	if err != nil {
		return nil, err
	}
	s.loop = loop
	return s, nil
}

// Subscribe starts the loop. The router subscribes once, to the loop's stream (topic).
func (s *subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	if err := s.loop.Start(ctx); err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.closing:
		}
	}()
	return s.out, nil
}

// hand gives one delivery to the router and waits for its verdict.
func (s *subscriber) hand(ctx context.Context, d consume.Delivery) consume.Outcome {
	msg, _ := unmarshaler{}.Unmarshal(d.Msg) // never fails: an unreadable request is marked
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(mctx)
	select {
	case s.out <- msg:
	case <-s.closing:
		return consume.Abandon() // not handed over: delivered again after AckWait
	case <-ctx.Done():
		return consume.Abandon()
	}
	select {
	case <-msg.Acked():
		return consume.Ack()
	case <-msg.Nacked():
		return consume.Retry(errNacked, 0)
	case <-ctx.Done():
		// The loop's stop ran out of time while the router still held the request.
		return consume.Abandon()
	}
}

// Close stops handing requests over, stops the loop (the requests the router holds are
// settled by its verdict, up to the stop's timeout), then closes the output channel, which no
// worker can send on any more.
func (s *subscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		ctx, cancel := s.stopCtx()
		defer cancel()
		if serr := s.loop.Stop(ctx); serr != nil {
			err = fmt.Errorf("triggers: stop the subscriber: %w", serr)
		}
		close(s.out)
		close(s.closed)
	})
	<-s.closed
	return err
}

// Stats returns the loop's counters.
func (s *subscriber) Stats() consume.Stats { return s.loop.Stats() }
