package blob

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/memmie/memmie/events"
)

// State is a blob: a fold over its deltas. Its JSON form is the view the API serves; it leaves
// out the records of the blob events and execution deltas applied, so a state that Decide or
// Deltas reads is rebuilt with Fold, never from its JSON. Apply reads none of those records: a
// state rebuilt from its JSON (the blobs projection's rows and snapshots) applies the next
// deltas as Fold's does. Fold and Apply build it; Decide and Deltas read it.
type State struct {
	BlobID string `json:"blob_id"`
	// UserID is the user_id of the blob's created event.
	UserID string `json:"user_id,omitempty"`
	// Version is the version of the last delta applied; 0 for a blob that does not exist.
	Version int64 `json:"version"`
	// Content is any JSON, null when the blob has none. Metadata is a JSON object. Both are
	// canonical: compact, keys sorted.
	Content  json.RawMessage `json:"content"`
	Metadata json.RawMessage `json:"metadata"`
	// Deleted is set by a delete delta; the content and metadata stay as they were.
	Deleted bool `json:"deleted"`
	// DerivedFrom is set for a blob that an execution derived from another.
	DerivedFrom *events.Derivation `json:"derived_from,omitempty"`
	// Derived lists the blobs derived from this one, in the order of their create_derived deltas.
	Derived []string `json:"derived,omitempty"`
	// LastDeltaID and Last are the id and lineage of the last delta; UpdatedAt its timestamp.
	LastDeltaID string               `json:"last_delta_id,omitempty"`
	Last        events.DeltaMetadata `json:"last"`
	UpdatedAt   time.Time            `json:"updated_at,omitzero"`

	// sources maps the id of each blob event recorded (create, update, delete) to its version,
	// so that the same event applied twice is recognised however old it is.
	sources records[int64]
	// written counts the deltas of each execution (execution_id) recorded, so that a write cut
	// short resumes where it stopped and a finished one writes nothing again.
	written records[int]
}

// Exists reports whether the blob was created.
func (s *State) Exists() bool { return s.Version > 0 }

// Depth is how many derivations separate the blob from a client's: 0 for a client's blob.
func (s *State) Depth() int {
	if s.DerivedFrom == nil {
		return 0
	}
	return s.DerivedFrom.Depth
}

// SourceVersion returns the version of the delta that recorded the blob event id, or false.
func (s *State) SourceVersion(eventID string) (int64, bool) {
	return s.sources.get(eventID)
}

// Written returns how many deltas of the execution the blob holds.
func (s *State) Written(executionID string) int {
	n, _ := s.written.get(executionID)
	return n
}

// Clone returns a deep copy, to roll back to when an append conflicts. Its cost does not grow
// with the blob's history: the records of event ids and executions are persistent, shared
// and never written (see Apply).
func (s State) Clone() State {
	c := s.detached()
	c.Derived = slices.Clone(s.Derived)
	return c
}

// detached is a copy that shares with s only what Apply never writes into: the records and
// Derived, to which Apply appends only on a copy (slices.Clip).
func (s State) detached() State {
	c := s
	c.Content = slices.Clone(s.Content)
	c.Metadata = slices.Clone(s.Metadata)
	if s.DerivedFrom != nil {
		d := *s.DerivedFrom
		c.DerivedFrom = &d
	}
	if s.Last.DerivedFrom != nil {
		d := *s.Last.DerivedFrom
		c.Last.DerivedFrom = &d
	}
	return c
}

// Snapshot is the blob as a triggered workflow reads it: the `blob` of its input. It is the
// events vocabulary's type, since trigger requests carry it.
type Snapshot = events.BlobSnapshot

// Snapshot returns the blob's document and identity.
func (s *State) Snapshot() Snapshot {
	return Snapshot{BlobID: s.BlobID, UserID: s.UserID, Version: s.Version, Content: orNull(s.Content),
		Metadata: s.doc().Metadata, Deleted: s.Deleted, DerivedFrom: s.DerivedFrom}
}

func (s *State) doc() document {
	d := document{Content: orNull(s.Content), Metadata: s.Metadata}
	if len(d.Metadata) == 0 {
		d.Metadata = jsonEmptyObject
	}
	return d
}

// Fold rebuilds a blob from its deltas, in version order. Versions count from 1 with no gap,
// so the first n deltas give the blob at version n. Its cost grows with the number of deltas
// as n log n at most (BenchmarkFold), plus each delta's pass over the document.
func Fold(deltas []events.Delta) (State, error) {
	var s State
	for i := range deltas {
		if err := s.Apply(deltas[i]); err != nil {
			return State{}, fmt.Errorf("fold blob: delta %d: %w", i, err)
		}
	}
	return s, nil
}

// Apply records one delta. The delta must take the next version: the first is version 1 of
// type create, each next one the version after, and nothing follows a delete. On an error the
// state is unchanged.
//
// Apply is pure for every holder of the state before it: a copy taken before (s2 := *s, or
// a State passed by value) keeps its version, document and records, since Apply replaces
// what it changes and never writes into what the copy shares. It costs O(log n) amortized in
// the blob's history, not O(n): the records of event ids and executions are persistent maps
// (a create_derived copies the Derived list, O(derived blobs)).
func (s *State) Apply(d events.Delta) error {
	next, err := s.applied(d)
	if err != nil {
		return fmt.Errorf("apply delta %s (%s, version %d) to blob %q: %w", d.ID, d.Type, d.Version, s.BlobID, err)
	}
	*s = next
	return nil
}

func (s *State) applied(d events.Delta) (State, error) {
	switch {
	case d.Version != s.Version+1:
		return State{}, fmt.Errorf("version %d after %d: versions count from 1 with no gap", d.Version, s.Version)
	case d.BaseVersion < 0 || d.BaseVersion >= d.Version:
		return State{}, fmt.Errorf("base_version %d: want 0 <= base_version < version", d.BaseVersion)
	case s.Version == 0 && d.Type != events.DeltaCreate:
		return State{}, fmt.Errorf("the first delta must be a %s", events.DeltaCreate)
	case s.Version > 0 && d.BlobID != s.BlobID:
		return State{}, fmt.Errorf("delta of blob %q", d.BlobID)
	case s.Deleted:
		return State{}, fmt.Errorf("the blob was deleted")
	}
	n := s.detached()
	doc := n.doc()
	switch d.Type {
	case events.DeltaCreate:
		if s.Version != 0 {
			return State{}, fmt.Errorf("a second %s", events.DeltaCreate)
		}
		created, err := parseDocument(orNull(d.NewValue))
		if err != nil {
			return State{}, err
		}
		doc = created
		n.BlobID, n.UserID, n.DerivedFrom = d.BlobID, d.Metadata.UserID, d.Metadata.DerivedFrom
	case events.DeltaUpdate:
		// new_value holds the members the event changed, at their new values: content as
		// given, metadata already merged.
		var changed document
		if err := json.Unmarshal(orNull(d.NewValue), &changed); err != nil {
			return State{}, fmt.Errorf("new_value: %w", err)
		}
		if changed.Content != nil {
			doc.Content = changed.Content
		}
		if changed.Metadata != nil {
			doc.Metadata = changed.Metadata
		}
		var err error
		if doc, err = doc.canonical(); err != nil {
			return State{}, err
		}
	case events.DeltaDelete:
		n.Deleted = true
	case events.DeltaTransform:
		if d.Path != "/content" {
			return State{}, fmt.Errorf("path %q: a transform replaces /content", d.Path)
		}
		if len(d.NewValue) == 0 {
			return State{}, fmt.Errorf("a transform needs a new_value")
		}
		doc.Content = d.NewValue
		var err error
		if doc, err = doc.canonical(); err != nil {
			return State{}, err
		}
	case events.DeltaCreateDerived:
		var derived struct {
			BlobID string `json:"blob_id"`
		}
		if err := json.Unmarshal(orNull(d.NewValue), &derived); err != nil || events.ValidToken(derived.BlobID) != nil {
			return State{}, fmt.Errorf("new_value: want {\"blob_id\": ...} naming the derived blob")
		}
		n.Derived = append(slices.Clip(n.Derived), derived.BlobID) // a new array: s keeps its own
	case events.DeltaAdd, events.DeltaRemove, events.DeltaReplace, events.DeltaMove, events.DeltaCopy:
		op := operation{Op: d.Type, Path: d.Path, From: d.From}
		if d.Type == events.DeltaAdd || d.Type == events.DeltaReplace {
			op.Value = d.NewValue
		}
		var err error
		if doc, err = op.apply(doc); err != nil {
			return State{}, fmt.Errorf("%s %s: %w", d.Type, d.Path, err)
		}
	default:
		return State{}, fmt.Errorf("unknown delta type %q", d.Type)
	}
	n.Content, n.Metadata = doc.Content, doc.Metadata
	switch d.Type {
	case events.DeltaCreate, events.DeltaUpdate, events.DeltaDelete:
		if id := d.Metadata.SourceEventID; id != "" {
			n.sources = n.sources.with(id, d.Version)
		}
	default:
		if id := d.Metadata.ExecutionID; id != "" {
			n.written = n.written.with(id, n.Written(id)+1)
		}
	}
	n.Version = d.Version
	n.LastDeltaID, n.Last, n.UpdatedAt = d.ID, d.Metadata, d.Timestamp
	return n, nil
}
