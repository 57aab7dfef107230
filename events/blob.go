package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// BlobKind is the last token of a blob event's subject.
type BlobKind string

const (
	BlobCreated BlobKind = "created"
	BlobUpdated BlobKind = "updated"
	BlobDeleted BlobKind = "deleted"
)

func (k BlobKind) valid() bool { return k == BlobCreated || k == BlobUpdated || k == BlobDeleted }

// BlobEvent is the data of a client's blob event (the contract's "Blob event data").
type BlobEvent struct {
	BlobID string `json:"blob_id"`
	UserID string `json:"user_id,omitempty"`
	// ProviderIDs limits the providers considered. Absent (nil) means every provider; an empty
	// list means none.
	ProviderIDs []string `json:"provider_ids"`
	// Content is any JSON; nil when absent (an update that only changes metadata).
	Content json.RawMessage `json:"content,omitempty"`
	// Metadata is a JSON object; on update it is merged as a JSON merge patch (RFC 7396).
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// DerivedFrom is set on the created event of a blob that an execution derived from another
	// (an output's created_blobs); clients' events leave it out.
	DerivedFrom *Derivation `json:"derived_from,omitempty"`

	// Kind is taken from the subject (or the envelope type), not from the data.
	Kind BlobKind `json:"-"`
}

// EventType returns the blob event's type, or "" when Kind is not set.
func (b *BlobEvent) EventType() Type {
	switch b.Kind {
	case BlobCreated:
		return TypeBlobCreated
	case BlobUpdated:
		return TypeBlobUpdated
	case BlobDeleted:
		return TypeBlobDeleted
	}
	return ""
}

// Derivation says which blob and execution a derived blob comes from. Depth counts the
// derivations from a client's blob: 1 for a blob derived from it, 2 for one derived from that.
type Derivation struct {
	BlobID      string `json:"blob_id"`
	ExecutionID string `json:"execution_id"`
	Depth       int    `json:"depth"`
}

func (d *Derivation) validate() error {
	if err := ValidToken(d.BlobID); err != nil {
		return fmt.Errorf("derived_from.blob_id: %w", err)
	}
	if d.ExecutionID == "" {
		return errors.New("derived_from.execution_id is required")
	}
	if d.Depth < 1 {
		return fmt.Errorf("derived_from.depth %d: want >= 1", d.Depth)
	}
	return nil
}

// ErrBlobIDMismatch marks a blob event whose data names another blob than its subject.
var ErrBlobIDMismatch = errors.New("blob_id differs from the subject's")

func (b *BlobEvent) validate() error {
	if err := ValidToken(b.BlobID); err != nil {
		return fmt.Errorf("blob_id: %w", err)
	}
	if b.DerivedFrom != nil {
		if b.Kind != BlobCreated {
			return errors.New("derived_from: only a created event names one")
		}
		if err := b.DerivedFrom.validate(); err != nil {
			return err
		}
	}
	if len(b.Metadata) > 0 && !bytes.Equal(b.Metadata, []byte("null")) {
		if t := bytes.TrimSpace(b.Metadata); len(t) == 0 || t[0] != '{' {
			return errors.New("metadata: want a JSON object")
		}
	}
	if b.Kind == BlobUpdated && len(b.Content) == 0 && len(b.Metadata) == 0 {
		return errors.New("an update carries content and/or metadata")
	}
	return nil
}

// DecodeBlobEvent decodes a client's blob event received on subject. The body is the data
// object itself or a CloudEvents 1.0 JSON envelope whose data is that object; id is the
// envelope's id, or "" for a bare object (then the message's Nats-Msg-Id names it). Unknown
// fields are rejected: a misspelt provider_ids would otherwise trigger every provider. The
// data's blob_id must equal the subject's.
func DecodeBlobEvent(subject string, body []byte) (ev BlobEvent, id string, err error) {
	blobID, kind, err := ParseBlobSubject(subject)
	if err != nil {
		return BlobEvent{}, "", err
	}
	if len(body) > MaxEventSize {
		return BlobEvent{}, "", fmt.Errorf("blob event: %d bytes exceed the limit of %d", len(body), MaxEventSize)
	}
	var probe struct {
		SpecVersion *string `json:"specversion"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return BlobEvent{}, "", fmt.Errorf("blob event: %w", err)
	}
	data := json.RawMessage(body)
	if probe.SpecVersion != nil {
		var env Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			return BlobEvent{}, "", fmt.Errorf("blob event envelope: %w", err)
		}
		if env.SpecVersion != SpecVersion {
			return BlobEvent{}, "", fmt.Errorf("blob event envelope: specversion %q, want %q", env.SpecVersion, SpecVersion)
		}
		if env.ID == "" {
			return BlobEvent{}, "", errors.New("blob event envelope: id is required")
		}
		if want := (&BlobEvent{Kind: kind}).EventType(); env.Type != "" && env.Type != want {
			return BlobEvent{}, "", fmt.Errorf("blob event envelope: type %q on a %s subject, want %q", env.Type, kind, want)
		}
		id, data = env.ID, env.Data
	}
	ev.Kind = kind
	if err := decodeStrict(data, &ev); err != nil {
		return BlobEvent{}, "", fmt.Errorf("blob event data: %w", err)
	}
	ev.Kind = kind
	if err := ev.validate(); err != nil {
		return BlobEvent{}, "", fmt.Errorf("blob event data: %w", err)
	}
	if ev.BlobID != blobID {
		return BlobEvent{}, "", fmt.Errorf("blob event data: %w: %q, the subject names %q", ErrBlobIDMismatch, ev.BlobID, blobID)
	}
	return ev, id, nil
}

// Delta types. Clients' blob events become create, update and delete; executions produce the
// others.
const (
	DeltaCreate        = "create"
	DeltaUpdate        = "update"
	DeltaDelete        = "delete"
	DeltaTransform     = "transform"
	DeltaCreateDerived = "create_derived"
	DeltaAdd           = "add"
	DeltaReplace       = "replace"
	DeltaRemove        = "remove"
	DeltaMove          = "move"
	DeltaCopy          = "copy"
)

// Delta is one change of a blob, on memmie.deltas.<blob_id> (the contract's "Delta data").
type Delta struct {
	// ID equals the envelope's id and its Nats-Msg-Id.
	ID          string `json:"id"`
	BlobID      string `json:"blob_id"`
	Version     int64  `json:"version"`
	BaseVersion int64  `json:"base_version"`
	ProviderID  string `json:"provider_id,omitempty"`
	Type        string `json:"type"`
	Path        string `json:"path,omitempty"`
	// From is the source pointer of a move or copy operation.
	From string `json:"from,omitempty"`
	// OldValue and NewValue are any JSON; nil when absent.
	OldValue  json.RawMessage `json:"old_value,omitempty"`
	NewValue  json.RawMessage `json:"new_value,omitempty"`
	Timestamp time.Time       `json:"timestamp"`
	Metadata  DeltaMetadata   `json:"metadata"`
}

// DeltaMetadata says where a delta came from.
type DeltaMetadata struct {
	WorkflowID       string `json:"workflow_id,omitempty"`
	WorkflowRevision int    `json:"workflow_revision,omitempty"`
	ExecutionID      string `json:"execution_id,omitempty"`
	StepID           string `json:"step_id,omitempty"`
	SourceEventID    string `json:"source_event_id,omitempty"`
	// UserID is the user_id of the blob event that made the delta.
	UserID string `json:"user_id,omitempty"`
	// DerivedFrom is set on the create delta of a derived blob.
	DerivedFrom *Derivation `json:"derived_from,omitempty"`
}

func (*Delta) EventType() Type { return TypeDelta }

func (d *Delta) validate() error {
	if d.ID == "" || d.Type == "" {
		return errors.New("id and type are required")
	}
	if err := ValidToken(d.BlobID); err != nil {
		return fmt.Errorf("blob_id: %w", err)
	}
	if d.Version < 1 || d.BaseVersion < 0 || d.BaseVersion >= d.Version {
		return fmt.Errorf("version %d and base_version %d: want 0 <= base_version < version", d.Version, d.BaseVersion)
	}
	return nil
}

// DefinitionRegistered records one revision of a definition, on
// memmie.definitions.<kind>s.<id>.
type DefinitionRegistered struct {
	Kind     string `json:"kind"` // schema, workflow or provider
	ID       string `json:"id"`
	Revision int    `json:"revision"`
	// Definition is the definition's canonical JSON.
	Definition json.RawMessage `json:"definition"`
}

// DefinitionDeactivated records that a definition is no longer triggered or startable. Its
// history stays.
type DefinitionDeactivated struct {
	Kind     string `json:"kind"`
	ID       string `json:"id"`
	Revision int    `json:"revision"`
}

func (*DefinitionRegistered) EventType() Type  { return TypeDefinitionRegistered }
func (*DefinitionDeactivated) EventType() Type { return TypeDefinitionDeactivated }

func (d *DefinitionRegistered) validate() error {
	if _, err := DefinitionSubject(d.Kind, d.ID); err != nil {
		return err
	}
	if d.Revision < 1 {
		return fmt.Errorf("revision %d: want >= 1", d.Revision)
	}
	if len(d.Definition) == 0 || bytes.Equal(d.Definition, []byte("null")) {
		return errors.New("definition is required")
	}
	return nil
}

func (d *DefinitionDeactivated) validate() error {
	if _, err := DefinitionSubject(d.Kind, d.ID); err != nil {
		return err
	}
	if d.Revision < 1 {
		return fmt.Errorf("revision %d: want >= 1", d.Revision)
	}
	return nil
}

// MaxDeadLetterData bounds the original message kept in a dead letter, so that a dead letter of
// a message at the size limit still fits in one (base64 grows it by a third).
const MaxDeadLetterData = 512 << 10

// DeadLetter records a message that could not be processed, on memmie.deadletter.<source>.
type DeadLetter struct {
	// Source names the handler that gave up, e.g. "blobs"; it is the subject's last token.
	Source   string              `json:"source"`
	Stream   string              `json:"stream,omitempty"`
	Sequence uint64              `json:"sequence,omitempty"`
	Subject  string              `json:"subject"`
	Headers  map[string][]string `json:"headers,omitempty"`
	// Data is the original message, cut to MaxDeadLetterData bytes (Truncated says so).
	Data      []byte `json:"data"`
	Truncated bool   `json:"truncated,omitempty"`
	Reason    string `json:"reason"`
}

func (*DeadLetter) EventType() Type { return TypeDeadLetter }

func (d *DeadLetter) validate() error {
	if err := ValidToken(d.Source); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if d.Reason == "" {
		return errors.New("reason is required")
	}
	if len(d.Data) > MaxDeadLetterData {
		return fmt.Errorf("data: %d bytes exceed %d", len(d.Data), MaxDeadLetterData)
	}
	return nil
}

// DeadLetterRedriven records that a dead letter was sent back to its original subject, on
// memmie.deadletter.<source>.redriven: the dead letters' projection marks it redriven.
type DeadLetterRedriven struct {
	// DeadLetterID is the id of the dead letter's event.
	DeadLetterID string `json:"dead_letter_id"`
	// Source is the dead letter's source; it is the subject's third token.
	Source string `json:"source"`
	// Subject is where the original message was published again, and Stream and Sequence
	// where it was stored.
	Subject  string `json:"subject"`
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	// MsgID is the Nats-Msg-Id of the message published again.
	MsgID string `json:"msg_id"`
}

func (*DeadLetterRedriven) EventType() Type { return TypeDeadLetterRedriven }

func (d *DeadLetterRedriven) validate() error {
	if d.DeadLetterID == "" {
		return errors.New("dead_letter_id is required")
	}
	if err := ValidToken(d.Source); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if d.Subject == "" || d.Stream == "" || d.MsgID == "" {
		return errors.New("subject, stream and msg_id are required")
	}
	return nil
}
