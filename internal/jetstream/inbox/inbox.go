// Package inbox sends commands to the orchestrator: an execution input (a start, a report, a
// fired timer, a cancel or retry request) published to memmie.inbox.<execution_id> on the
// MEMMIE_INBOX stream, with the event's id as Nats-Msg-Id, so that a command sent twice
// within the stream's duplicate window is kept once (and after it, the orchestrator finds it
// stale).
//
//	err := inbox.Publish(ctx, js, execution.Fire(id, events.TimerStepRetry, ref, due))
//
// Only the orchestrator turns commands into execution events; nothing else writes to
// memmie.executions.<id>.> but the execution's first event.
package inbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
)

// Publish sends an execution input to its execution's inbox and waits for the stream's ack.
func Publish(ctx context.Context, js jetstream.JetStream, ev events.Event) error {
	if !ev.Type.IsInput() {
		return fmt.Errorf("publish %s %s: not an execution input", ev.Type, ev.ID)
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return err
	}
	return PublishData(ctx, js, ev.ExecutionID(), ev.ID, data)
}

// PublishData sends an encoded input to the inbox of executionID, with Nats-Msg-Id id.
func PublishData(ctx context.Context, js jetstream.JetStream, executionID, id string, data []byte) error {
	if id == "" {
		return errors.New("publish to inbox: no message id")
	}
	if err := events.ValidToken(executionID); err != nil {
		return fmt.Errorf("publish to inbox: execution id: %w", err)
	}
	subject := events.InboxSubject(executionID)
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(streams.Inbox)); err != nil {
		return fmt.Errorf("publish to %s: %w", subject, err)
	}
	return nil
}
