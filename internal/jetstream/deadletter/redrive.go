package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// ErrNotRedrivable marks a dead letter that Redrive refuses to send back: the error says why.
var ErrNotRedrivable = errors.New("cannot be redriven")

// HeaderRedriveOf carries, on a redriven message, the id of the dead letter it was sent back
// from; a dead letter of the redriven message shows it among its headers.
const HeaderRedriveOf = "Memmie-Redrive-Of"

// Target returns the stream a redrive of dl publishes to, or an error wrapping ErrNotRedrivable.
//
// Only the streams whose messages are commands or clients' events take a redrive:
// MEMMIE_INBOX (an execution's input, which the orchestrator applies once, however often it
// arrives) and MEMMIE_BLOBS (a client's blob event). memmie's own histories
// (MEMMIE_EXECUTIONS, MEMMIE_DELTAS, MEMMIE_DEFINITIONS) are appended by their one writer
// under optimistic concurrency: a copy published there would be an event that no writer
// decided, and the original is still in its stream, so the fix is to the consumer that refused
// it (for a projection, `memmie projections rebuild` once it is fixed). A dead letter of a
// dead letter, a message that was not in a stream and a message cut short when it was
// recorded (Truncated) are refused too.
func Target(dl *events.DeadLetter) (string, error) {
	refuse := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: %s", ErrNotRedrivable, fmt.Sprintf(format, args...))
	}
	if dl.Truncated {
		return refuse("its data was cut to %d bytes when it was recorded; the original message is not kept", len(dl.Data))
	}
	switch dl.Stream {
	case streams.Inbox:
		if _, err := events.ParseInboxSubject(dl.Subject); err != nil {
			return refuse("%v", err)
		}
		return streams.Inbox, nil
	case streams.Blobs:
		if _, _, err := events.ParseBlobSubject(dl.Subject); err != nil {
			return refuse("%v", err)
		}
		return streams.Blobs, nil
	case streams.Executions, streams.Deltas, streams.Definitions:
		return refuse("it is stored in %s, a history that only memmie appends to, under optimistic concurrency; "+
			"the message is still there: fix what refused it (a projection: memmie projections rebuild)", dl.Stream)
	case streams.DeadLetter:
		return refuse("it is a dead letter itself, stored in %s", dl.Stream)
	case "":
		return refuse("it was not stored in a stream, so where it would go is unknown")
	}
	return refuse("it is stored in %s; memmie redrives to %s and %s only", dl.Stream, streams.Inbox, streams.Blobs)
}

// RedriveMsgID is the Nats-Msg-Id of the redrive of the dead letter id: the same for every
// redrive of it, so that redriving it twice within the target's duplicate window publishes once.
func RedriveMsgID(id string) string { return events.ID("deadletter/redrive", id) }

// Redriven says what a redrive sent.
type Redriven struct {
	// DeadLetterID is the redriven dead letter's id.
	DeadLetterID string
	// Subject is where the message went; Stream and Sequence where it is stored.
	Subject  string
	Stream   string
	Sequence uint64
	// MsgID is the message's Nats-Msg-Id (RedriveMsgID).
	MsgID string
	// Duplicate is true when the stream had the message already, from a redrive within its
	// duplicate window: nothing new was delivered.
	Duplicate bool
	// At is the time of the redrive, to the microsecond.
	At time.Time
}

// Redrive publishes the original message of dl, the dead letter id, to its original subject,
// then records the redrive on memmie.deadletter.<source>.redriven (events.DeadLetterRedriven).
// It refuses what Target refuses. The message keeps its data and its headers but those that
// steer JetStream (Nats-*: the original Nats-Msg-Id, expectations, schedules), which a copy must
// not reuse; it gets RedriveMsgID(id) as Nats-Msg-Id and HeaderRedriveOf.
//
// Redriving twice within the target stream's duplicate window (streams.DuplicateWindow)
// publishes once and records once. After it, a second redrive publishes a second copy, which
// its consumer treats as the same message arriving again (the orchestrator finds an input it
// applied already stale). A failure after the publish leaves the redrive unrecorded: redriving
// again within the window records it without publishing again.
func (w *Writer) Redrive(ctx context.Context, id string, dl *events.DeadLetter) (Redriven, error) {
	if id == "" {
		return Redriven{}, errors.New("redrive: a dead letter id is required")
	}
	target, err := Target(dl)
	if err != nil {
		return Redriven{}, fmt.Errorf("redrive %s: %w", id, err)
	}
	header := nats.Header{}
	for k, v := range dl.Headers {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			header[k] = slices.Clone(v)
		}
	}
	header.Set(HeaderRedriveOf, id)
	// In microseconds, as the dead letters' view keeps it.
	at := w.cfg.Now().UTC().Truncate(time.Microsecond)
	out := Redriven{DeadLetterID: id, Subject: dl.Subject, Stream: target, MsgID: RedriveMsgID(id), At: at}
	ack, err := stream.Append(ctx, w.js, target, []stream.Msg{{Subject: dl.Subject, Data: dl.Data, ID: out.MsgID, Header: header}}, stream.Expect{})
	if err != nil {
		return Redriven{}, fmt.Errorf("redrive %s to %s: %w", id, dl.Subject, err)
	}
	out.Sequence, out.Duplicate = ack.LastSeq, ack.Duplicate

	subject, err := events.DeadLetterRedrivenSubject(dl.Source)
	if err != nil {
		return Redriven{}, fmt.Errorf("redrive %s: %w", id, err)
	}
	ev := events.Event{
		ID:      events.ID("deadletter/redriven", id),
		Source:  events.SourceDeadLetter,
		Type:    events.TypeDeadLetterRedriven,
		Subject: subject,
		Time:    out.At,
		Data: &events.DeadLetterRedriven{DeadLetterID: id, Source: dl.Source, Subject: dl.Subject,
			Stream: target, Sequence: out.Sequence, MsgID: out.MsgID},
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return Redriven{}, fmt.Errorf("redrive %s: %w", id, err)
	}
	if _, err := stream.Append(ctx, w.js, w.cfg.Stream, []stream.Msg{{Subject: ev.Subject, Data: data, ID: ev.ID}}, stream.Expect{}); err != nil {
		return Redriven{}, fmt.Errorf("redrive %s: record it: %w", id, err)
	}
	return out, nil
}
