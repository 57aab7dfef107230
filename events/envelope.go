package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// CloudEvents attributes and NATS headers of every event memmie writes.
const (
	SpecVersion     = "1.0"
	DataContentType = "application/json"

	// HeaderMsgID carries the event id; JetStream drops a second message with the same id
	// within the stream's duplicate window.
	HeaderMsgID = "Nats-Msg-Id"
)

// MaxEventSize bounds an encoded event. It stays below NATS' default max_payload (1 MiB) so
// that the headers fit beside it.
const MaxEventSize = 1<<20 - 16<<10

// Data is an event's typed payload. EventType names its type string explicitly.
type Data interface {
	EventType() Type
}

// Event is a decoded event: the CloudEvents attributes and the typed payload.
type Event struct {
	ID      string
	Source  string
	Type    Type
	Subject string
	Time    time.Time
	// Data's concrete type is fixed by Type: a pointer to the struct of that name (for example
	// *ExecutionQueued for TypeExecutionQueued).
	Data Data

	// size is the length of the event's stored encoding when known (see EncodedSize).
	size int
	// encoding is the event's encoding when a writer recorded it (see Encoding).
	encoding []byte
}

// EncodedSize is the length in bytes of the event's encoding when it is known, 0 otherwise:
// Decode sets it to the length of what it decoded, and a writer that has marshalled the event
// records it with WithEncodedSize. It saves marshalling an event again only to measure it.
func (e Event) EncodedSize() int { return e.size }

// WithEncodedSize returns the event with its encoding's length recorded (see EncodedSize).
func (e Event) WithEncodedSize(n int) Event {
	e.size = n
	return e
}

// Encoding returns the event's encoding when a writer recorded it with WithEncoding, nil
// otherwise: the bytes to append, without marshalling the event a second time.
func (e Event) Encoding() []byte { return e.encoding }

// WithEncoding returns the event with b, its encoding by Marshal, recorded (see Encoding and
// EncodedSize). The event must not change afterwards, or the bytes would not be its own.
func (e Event) WithEncoding(b []byte) Event {
	e.size, e.encoding = len(b), b
	return e
}

// Envelope is the CloudEvents 1.0 JSON envelope, as it is stored.
type Envelope struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            Type      `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	// DataSchemaVersion grows when the payload's shape changes (see Upcaster).
	DataSchemaVersion int             `json:"dataschemaversion"`
	Data              json.RawMessage `json:"data"`
}

// Upcaster rewrites the data of one type from one schema version to the next. It works on raw
// JSON because the Go shape of old versions is not kept.
type Upcaster func(data json.RawMessage) (json.RawMessage, error)

type registration struct {
	version   int
	execution bool
	new       func() Data
	// upcast[v] turns version v into v+1.
	upcast map[int]Upcaster
}

// Version returns the current data schema version of t, or 0 when t is unknown.
func Version(t Type) int {
	if reg, ok := registry[t]; ok {
		return reg.version
	}
	return 0
}

// Types returns every registered type, sorted.
func Types() []Type {
	out := make([]Type, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	sortTypes(out)
	return out
}

// Marshal encodes an event as a CloudEvents envelope at its type's current schema version.
func Marshal(e Event) ([]byte, error) {
	if e.Data == nil {
		return nil, fmt.Errorf("marshal event %s: no data", e.ID)
	}
	reg, ok := registry[e.Type]
	if !ok {
		return nil, fmt.Errorf("marshal event %s: unknown type %q", e.ID, e.Type)
	}
	if e.Data.EventType() != e.Type {
		return nil, fmt.Errorf("marshal event %s: data of type %s in an event of type %s", e.ID, e.Data.EventType(), e.Type)
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s data: %w", e.ID, err)
	}
	// The envelope's attributes and the time take some 150 bytes besides the strings.
	n := len(data) + len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject) + 192
	b, err := appendEnvelope(make([]byte, 0, n), e, reg.version, data)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", e.ID, err)
	}
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("marshal event %s: %d bytes exceed the limit of %d", e.ID, len(b), MaxEventSize)
	}
	return b, nil
}

// appendEnvelope appends the envelope of e around its encoded data, byte for byte what
// json.Marshal of an Envelope writes. It is written by hand because json.Marshal compacts a
// RawMessage again, and data from json.Marshal is compact already.
func appendEnvelope(b []byte, e Event, version int, data []byte) ([]byte, error) {
	t := e.Time.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("time %v: year outside of range [0,9999]", t)
	}
	b = append(b, `{"specversion":`...)
	b = appendString(b, SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, string(e.Type))
	if e.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, e.Subject)
	}
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":`...)
	b = appendString(b, DataContentType)
	b = append(b, `,"dataschemaversion":`...)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}'), nil
}

// appendString appends s as a JSON string, escaped as json.Marshal escapes it. Ids, types and
// subjects are plain ASCII: only others take the slow path.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ErrUnknownType marks an event whose type this build does not know.
var ErrUnknownType = errors.New("unknown event type")

// Decode parses an envelope and its data. It rejects oversized input, envelopes that are not
// CloudEvents 1.0 JSON, unknown types, data schema versions newer than this build knows, and
// data with unknown or malformed fields. Data of an older version is upcast first. Unknown
// envelope attributes (CloudEvents extensions) are ignored.
func Decode(b []byte) (Event, error) {
	if len(b) > MaxEventSize {
		return Event{}, fmt.Errorf("decode event: %d bytes exceed the limit of %d", len(b), MaxEventSize)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Event{}, fmt.Errorf("decode event envelope: %w", err)
	}
	ev, err := DecodeEnvelope(env)
	if err != nil {
		return Event{}, err
	}
	return ev.WithEncodedSize(len(b)), nil
}

// DecodeEnvelope decodes the data of an already parsed envelope (see Decode).
func DecodeEnvelope(env Envelope) (Event, error) {
	if env.SpecVersion != SpecVersion {
		return Event{}, fmt.Errorf("decode event %q: specversion %q, want %q", env.ID, env.SpecVersion, SpecVersion)
	}
	if env.ID == "" || env.Source == "" {
		return Event{}, fmt.Errorf("decode event %q: id and source are required", env.ID)
	}
	if env.DataContentType != "" && env.DataContentType != DataContentType {
		return Event{}, fmt.Errorf("decode event %s: datacontenttype %q, want %q", env.ID, env.DataContentType, DataContentType)
	}
	reg, ok := registry[env.Type]
	if !ok {
		return Event{}, fmt.Errorf("decode event %s: %w %q", env.ID, ErrUnknownType, env.Type)
	}
	if env.DataSchemaVersion < 1 || env.DataSchemaVersion > reg.version {
		return Event{}, fmt.Errorf("decode event %s: %s dataschemaversion %d, this build reads 1 to %d",
			env.ID, env.Type, env.DataSchemaVersion, reg.version)
	}
	data := env.Data
	for v := env.DataSchemaVersion; v < reg.version; v++ {
		up := reg.upcast[v]
		if up == nil {
			return Event{}, fmt.Errorf("decode event %s: no upcaster for %s version %d", env.ID, env.Type, v)
		}
		var err error
		if data, err = up(data); err != nil {
			return Event{}, fmt.Errorf("decode event %s: upcast %s from version %d: %w", env.ID, env.Type, v, err)
		}
	}
	d := reg.new()
	if err := decodeStrict(data, d); err != nil {
		return Event{}, fmt.Errorf("decode event %s: %s data: %w", env.ID, env.Type, err)
	}
	if err := validate(d); err != nil {
		return Event{}, fmt.Errorf("decode event %s: %s data: %w", env.ID, env.Type, err)
	}
	return Event{
		ID:      env.ID,
		Source:  env.Source,
		Type:    env.Type,
		Subject: env.Subject,
		Time:    env.Time,
		Data:    d,
	}, nil
}

// decodeStrict decodes one JSON value into v, rejecting unknown fields and trailing data: the
// data of memmie's own events has exactly the shape of its version.
func decodeStrict(data []byte, v any) error {
	if t := bytes.TrimSpace(data); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func validate(d Data) error {
	switch d := d.(type) {
	case ExecutionData:
		return validateExecution(d)
	case interface{ validate() error }:
		return d.validate()
	}
	return nil
}
