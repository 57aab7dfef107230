// Package deadletter records messages that a handler cannot process on
// memmie.deadletter.<source> (stream MEMMIE_DEADLETTER), with the reason and the original
// subject, headers and body, so that an operator can inspect them and send them back.
//
//	w := deadletter.NewWriter(js, deadletter.Config{})
//	err := w.Record(ctx, "runner", msg, "decode event: unexpected end of JSON input")
//
// A dead letter's id is derived from the source and the original message's stream and
// sequence: recording the same message twice (a redelivery after a lost ack) stores it once
// within the stream's duplicate window. The package never acknowledges the original message;
// its consumer does, once Record returned nil.
//
// Writer.Redrive sends a dead letter's original message back to its subject and records that
// on memmie.deadletter.<source>.redriven; Target says which dead letters it takes.
package deadletter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/events/streams"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// Config configures a Writer.
type Config struct {
	// Stream is the dead-letter stream. Defaults to streams.DeadLetter.
	Stream string
	// Now is the clock of the dead letters' times. Defaults to time.Now.
	Now func() time.Time
}

// Writer records dead letters. It is safe for concurrent use.
type Writer struct {
	js  jetstream.JetStream
	cfg Config
}

// NewWriter returns a writer on js.
func NewWriter(js jetstream.JetStream, cfg Config) *Writer {
	cfg.Stream = cmp.Or(cfg.Stream, streams.DeadLetter)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Writer{js: js, cfg: cfg}
}

// Message is the original message of a dead letter.
type Message struct {
	// Stream and Sequence locate it, when it came from a stream.
	Stream   string
	Sequence uint64
	Subject  string
	Header   nats.Header
	Data     []byte
}

// FromJetStream returns the dead-letter view of a consumed message. A command of the inbox,
// stored under its partition's subject (memmie.inbox.<partition>.<id>), is recorded under the
// subject it was sent to (memmie.inbox.<id>), and a blob event stored as
// memmie.blobs.<partition>.<blob_id>.<kind> under memmie.blobs.<blob_id>.<kind>: that is where
// a redrive sends it back.
func FromJetStream(msg jetstream.Msg) Message {
	m := Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		m.Stream, m.Sequence = md.Stream, md.Sequence.Stream
	}
	m.Subject = Published(m.Stream, m.Subject)
	return m
}

// Published returns the subject a message stored in stream under subject was published to:
// partitioned subjects of the inbox and of MEMMIE_BLOBS map back, anything else is itself.
func Published(stream, subject string) string {
	switch stream {
	case streams.Inbox, "":
		if _, id, err := streams.ParseInboxPartitionSubject(subject); err == nil {
			return events.InboxSubject(id)
		}
	}
	switch stream {
	case streams.Blobs, "":
		if _, published, err := streams.ParseBlobPartitionSubject(subject); err == nil {
			return published
		}
	}
	return subject
}

// Record stores msg as a dead letter of source (a subject token such as "runner") with the
// reason. It returns once the dead letter is stored.
func (w *Writer) Record(ctx context.Context, source string, msg jetstream.Msg, reason string) error {
	return w.RecordMessage(ctx, source, FromJetStream(msg), reason)
}

// RecordMessage is Record for a message that is not at hand as a jetstream.Msg.
func (w *Writer) RecordMessage(ctx context.Context, source string, m Message, reason string) error {
	ev, err := New(source, m, reason, w.cfg.Now())
	if err != nil {
		return err
	}
	data, err := events.Marshal(ev)
	if err != nil {
		return fmt.Errorf("dead-letter %s %s: %w", source, m.Subject, err)
	}
	if _, err := stream.Append(ctx, w.js, w.cfg.Stream, []stream.Msg{{Subject: ev.Subject, Data: data, ID: ev.ID}}, stream.Expect{}); err != nil {
		return fmt.Errorf("dead-letter %s %s: %w", source, m.Subject, err)
	}
	return nil
}

// maxReason bounds a reason, so that a dead letter of a message at the size limit fits.
const maxReason = 4 << 10

// New builds the dead-letter event of m. Its id is deterministic when m has a stream position.
func New(source string, m Message, reason string, now time.Time) (events.Event, error) {
	subject, err := events.DeadLetterSubject(source)
	if err != nil {
		return events.Event{}, err
	}
	if reason == "" {
		return events.Event{}, errors.New("dead-letter: a reason is required")
	}
	if len(reason) > maxReason {
		reason = reason[:maxReason] + "…"
	}
	data, truncated := m.Data, false
	if len(data) > events.MaxDeadLetterData {
		data, truncated = data[:events.MaxDeadLetterData], true
	}
	var headers map[string][]string
	if len(m.Header) > 0 {
		headers = maps.Clone(map[string][]string(m.Header))
		for k, v := range headers {
			headers[k] = slices.Clone(v)
		}
	}
	key := m.Stream + "/" + strconv.FormatUint(m.Sequence, 10)
	if m.Stream == "" {
		// No position: every record is its own.
		key = "at/" + now.UTC().Format(time.RFC3339Nano) + "/" + m.Subject
	}
	return events.Event{
		ID:      events.ID("deadletter/"+source, key),
		Source:  events.SourceDeadLetter,
		Type:    events.TypeDeadLetter,
		Subject: subject,
		Time:    now.UTC(),
		Data: &events.DeadLetter{
			Source:    source,
			Stream:    m.Stream,
			Sequence:  m.Sequence,
			Subject:   m.Subject,
			Headers:   headers,
			Data:      data,
			Truncated: truncated,
			Reason:    reason,
		},
	}, nil
}
