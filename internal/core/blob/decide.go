package blob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/memmie/memmie/events"
)

// Reason says why a blob event is refused. The handler dead-letters the event with it.
type Reason string

const (
	ReasonInvalidJSON    Reason = "invalid_json"     // the body is not JSON
	ReasonInvalidEvent   Reason = "invalid_event"    // the body breaks the blob-event contract
	ReasonBlobIDMismatch Reason = "blob_id_mismatch" // the data's blob_id is not the subject's
	ReasonNotFound       Reason = "blob_not_found"   // an updated or deleted event for no blob
	ReasonDeleted        Reason = "blob_deleted"     // an updated or deleted event for a deleted blob
	ReasonExists         Reason = "blob_exists"      // a second created event
	ReasonTooLarge       Reason = "too_large"        // its delta would not fit in an event
)

// Refusal is a blob event that can never be processed: the handler dead-letters it with
// Error() as the reason and goes on.
type Refusal struct {
	Reason  Reason
	Message string
}

func (r *Refusal) Error() string { return string(r.Reason) + ": " + r.Message }

func refuse(reason Reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Message is a blob event as it arrived on memmie.blobs.<blob_id>.<kind>.
type Message struct {
	Subject string
	Body    []byte
	// MsgID is the message's Nats-Msg-Id, or, when it has none, an id the shell keeps stable
	// across redeliveries, such as the stream name and sequence. A CloudEvents envelope's id
	// takes precedence.
	MsgID string
}

// Event is a decoded blob event.
type Event struct {
	// ID names the event: the envelope's id, else the message's MsgID. The event's delta
	// records it as source_event_id.
	ID   string
	Data events.BlobEvent
}

// Kind is the event's kind, from its subject.
func (e Event) Kind() events.BlobKind { return e.Data.Kind }

// Parse decodes a blob event. A body that cannot be processed gives a *Refusal; a message with
// no id at all is the shell's error, not the client's.
func Parse(m Message) (Event, error) {
	if !json.Valid(m.Body) {
		return Event{}, refuse(ReasonInvalidJSON, "the body of %s is not valid JSON", m.Subject)
	}
	data, id, err := events.DecodeBlobEvent(m.Subject, m.Body)
	switch {
	case errors.Is(err, events.ErrBlobIDMismatch):
		return Event{}, refuse(ReasonBlobIDMismatch, "%v", err)
	case err != nil:
		return Event{}, refuse(ReasonInvalidEvent, "%v", err)
	}
	if id == "" {
		id = m.MsgID
	}
	if id == "" {
		return Event{}, fmt.Errorf("parse blob event on %s: no envelope id and no message id", m.Subject)
	}
	return Event{ID: id, Data: data}, nil
}

// Decision is what a blob event does to its blob.
type Decision struct {
	// Delta is the delta to append, expecting the blob's last sequence; empty when Duplicate.
	Delta events.Delta
	// Duplicate says the blob already holds this event's delta: nothing is appended. The
	// executions it triggered are matched again on the blob at Version (the current state when
	// Version is the state's), since a crash may have come between the delta and the starts.
	Duplicate bool
	// Version is the version of the event's delta, new or already written.
	Version int64
}

// EventDeltaID is the id of the delta that records a blob event: the same event gets the same
// id, which is its Nats-Msg-Id. The blob is part of it, since clients choose event ids.
func EventDeltaID(blobID, eventID string) string { return events.ID(blobID, "event/"+eventID) }

// Decide returns the delta that records a blob event, given the blob's state before it (the
// zero State for a blob never seen). created becomes version 1 of type create; updated an
// update, whose content replaces and whose metadata is merged as a JSON merge patch (RFC 7396);
// deleted a delete. An event the blob already holds is a Duplicate. An event that cannot apply
// is a *Refusal: an update or delete of a blob that does not exist or was deleted, or a second
// created. Decide is pure: the same state, event and now give the same delta.
func Decide(s State, ev Event, now time.Time) (Decision, error) {
	b := &ev.Data
	if s.Exists() && s.BlobID != b.BlobID {
		return Decision{}, fmt.Errorf("decide on blob event %s: the state is of blob %q, the event of %q", ev.ID, s.BlobID, b.BlobID)
	}
	if v, ok := s.SourceVersion(ev.ID); ok {
		return Decision{Duplicate: true, Version: v}, nil
	}
	d := events.Delta{
		ID:          EventDeltaID(b.BlobID, ev.ID),
		BlobID:      b.BlobID,
		Version:     s.Version + 1,
		BaseVersion: s.Version,
		Timestamp:   now.UTC(),
		Metadata:    events.DeltaMetadata{SourceEventID: ev.ID, UserID: b.UserID},
	}
	switch b.Kind {
	case events.BlobCreated:
		if s.Exists() {
			return Decision{}, refuse(ReasonExists, "blob %q already exists (version %d); a created event cannot apply", b.BlobID, s.Version)
		}
		doc, err := document{Content: b.Content, Metadata: b.Metadata}.canonical()
		if err != nil {
			return Decision{}, refuse(ReasonInvalidEvent, "created event %s: %v", ev.ID, err)
		}
		d.Type, d.NewValue = events.DeltaCreate, doc.bytes()
		if f := b.DerivedFrom; f != nil {
			from := *f
			d.Metadata.DerivedFrom, d.Metadata.ExecutionID = &from, f.ExecutionID
		}
	case events.BlobUpdated, events.BlobDeleted:
		switch {
		case !s.Exists():
			return Decision{}, refuse(ReasonNotFound, "blob %q does not exist; an %s event cannot apply", b.BlobID, b.Kind)
		case s.Deleted:
			return Decision{}, refuse(ReasonDeleted, "blob %q was deleted at version %d; an %s event cannot apply", b.BlobID, s.Version, b.Kind)
		}
		if b.Kind == events.BlobDeleted {
			d.Type, d.OldValue = events.DeltaDelete, bounded(s.doc().bytes())
			break
		}
		var err error
		if d.OldValue, d.NewValue, err = update(s.doc(), b); err != nil {
			return Decision{}, refuse(ReasonInvalidEvent, "updated event %s: %v", ev.ID, err)
		}
		d.Type = events.DeltaUpdate
	default:
		return Decision{}, fmt.Errorf("decide on blob event %s: unknown kind %q", ev.ID, b.Kind)
	}
	if err := fit(&d); err != nil {
		return Decision{}, refuse(ReasonTooLarge, "%s event %s: %v", b.Kind, ev.ID, err)
	}
	// The delta must apply as Fold will apply it; anything else is a bug here.
	if _, err := s.applied(d); err != nil {
		return Decision{}, fmt.Errorf("decide on blob event %s: %w", ev.ID, err)
	}
	return Decision{Delta: d, Version: d.Version}, nil
}

// update returns the old and new values of the members an updated event changes: content
// replaced, metadata merged (RFC 7396, with the library) and recorded as its result, so that a
// client replaying the deltas needs no merge of its own. A null metadata changes nothing.
func update(old document, b *events.BlobEvent) (oldValue, newValue json.RawMessage, err error) {
	var was, now bytes.Buffer
	sep := ""
	member := func(name string, o, n json.RawMessage) {
		was.WriteString(sep + `"` + name + `":`)
		was.Write(o)
		now.WriteString(sep + `"` + name + `":`)
		now.Write(n)
		sep = ","
	}
	was.WriteString("{")
	now.WriteString("{")
	if b.Content != nil {
		c, err := canonical(b.Content)
		if err != nil {
			return nil, nil, fmt.Errorf("content: %w", err)
		}
		member("content", old.Content, c)
	}
	if !isNull(b.Metadata) {
		merged, err := jsonpatch.MergePatch(old.Metadata, b.Metadata)
		if err != nil {
			return nil, nil, fmt.Errorf("metadata: merge patch: %w", err)
		}
		if merged, err = canonical(merged); err != nil {
			return nil, nil, fmt.Errorf("metadata: %w", err)
		}
		member("metadata", old.Metadata, merged)
	}
	if sep == "" {
		return nil, nil, errors.New("an update carries content and/or metadata")
	}
	was.WriteString("}")
	now.WriteString("}")
	return bounded(was.Bytes()), now.Bytes(), nil
}
