package events

import (
	"encoding/json"
	"errors"
	"fmt"
)

// TypeTriggerRequested asks the trigger matcher to start the executions a recorded blob event
// triggers (see TriggerRequested).
const TypeTriggerRequested Type = "memmie.trigger.requested"

// SubjectTriggers is the filter of trigger requests: memmie.triggers.<blob_id>.
const SubjectTriggers = "memmie.triggers.>"

// HeaderCorrelationID carries a trigger request's correlation id, the blob event's id. It is
// Watermill's correlation id metadata key, so that the matcher's router hands it on to what the
// request starts.
const HeaderCorrelationID = "correlation_id"

// TriggerSubject returns memmie.triggers.<blob_id>.
func TriggerSubject(blobID string) (string, error) {
	if err := ValidToken(blobID); err != nil {
		return "", fmt.Errorf("trigger subject: blob id: %w", err)
	}
	return "memmie.triggers." + blobID, nil
}

// TriggerRequestID is the id, and Nats-Msg-Id, of the trigger request of a blob event: the
// same recorded event always asks with the same id.
func TriggerRequestID(blobID, eventID string) string {
	return ID(blobID+"/"+eventID, "trigger-request")
}

// BlobSnapshot is a blob as a triggered workflow reads it (the `blob` of its input), at one
// version.
type BlobSnapshot struct {
	BlobID      string          `json:"blob_id"`
	UserID      string          `json:"user_id,omitempty"`
	Version     int64           `json:"version"`
	Content     json.RawMessage `json:"content"`
	Metadata    json.RawMessage `json:"metadata"`
	Deleted     bool            `json:"deleted"`
	DerivedFrom *Derivation     `json:"derived_from,omitempty"`
}

// TriggerRequested is a command of the writer of blob histories to the trigger matcher, on
// memmie.triggers.<blob_id> (stream MEMMIE_TRIGGERS): the blob event EventID, recorded as the
// blob's version Blob.Version, is to be matched against the providers' triggers. It is
// consumed once; the executions it starts have deterministic ids, so a request handled twice
// starts nothing new.
type TriggerRequested struct {
	// EventID is the blob event's id (the source_event_id of its delta).
	EventID string `json:"event_id"`
	// Kind is the blob event's kind, and Event its data.
	Kind  BlobKind  `json:"kind"`
	Event BlobEvent `json:"event"`
	// Blob is the blob after the event.
	Blob BlobSnapshot `json:"blob"`
}

func (*TriggerRequested) EventType() Type { return TypeTriggerRequested }

func (r *TriggerRequested) validate() error {
	if r.EventID == "" {
		return errors.New("event_id is required")
	}
	if !r.Kind.valid() {
		return fmt.Errorf("kind %q: want created, updated or deleted", r.Kind)
	}
	// The data leaves the kind out (it is the subject's on a blob event): it is Kind.
	r.Event.Kind = r.Kind
	if err := r.Event.validate(); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	switch {
	case r.Blob.BlobID != r.Event.BlobID:
		return fmt.Errorf("blob.blob_id %q differs from the event's %q", r.Blob.BlobID, r.Event.BlobID)
	case r.Blob.Version < 1:
		return fmt.Errorf("blob.version %d: want >= 1", r.Blob.Version)
	}
	return nil
}
