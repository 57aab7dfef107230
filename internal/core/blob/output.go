package blob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/memmie/memmie/events"
)

// Execution is a completed execution of a blob, with the lineage its deltas carry. Failed and
// cancelled executions write no delta; the shell does not call Deltas for them.
type Execution struct {
	ExecutionID      string
	WorkflowID       string
	WorkflowRevision int
	ProviderID       string
	BlobID           string
	// BaseVersion is the blob version the execution read (its queued event's base_version).
	BaseVersion   int64
	SourceEventID string
	// StepID names the step the output came from, where known.
	StepID string
	// Output is the execution's output: an object whose delta_operations, transformed_content
	// and created_blobs become deltas; anything else writes nothing.
	Output any
}

// Result is what a completed execution writes.
type Result struct {
	// Deltas are to be appended in order, each expecting the blob's last sequence. They
	// continue after the Written deltas the blob already holds.
	Deltas []events.Delta
	// Written is how many deltas of the execution the blob already held (a write cut short, or
	// one delivered again).
	Written int
	// Created are the created events of the derived blobs, each on its blob's subject, to
	// publish once the deltas are appended. They are every derived blob's, including those whose
	// create_derived delta was written before: publishing one again is a duplicate.
	Created []events.Event
}

// Rejection is an execution output that cannot apply to the blob. Nothing of it is written; the
// execution shows the failure, and the blob's other deltas go on.
type Rejection struct {
	ExecutionID string
	// Item names what could not apply, such as delta_operations[2] or created_blobs[0].
	Item   string
	Reason string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("deltas of execution %s: %s: %s", r.ExecutionID, r.Item, r.Reason)
}

// ExecutionDeltaID is the id of an execution's index-th delta (from 0), its Nats-Msg-Id.
func ExecutionDeltaID(executionID string, index int) string {
	return events.ID(executionID, "delta/"+strconv.Itoa(index))
}

// DerivedBlobID is the id of the index-th blob (from 0) an execution's created_blobs derives.
func DerivedBlobID(executionID string, index int) string {
	return events.ID(executionID, "derived/"+strconv.Itoa(index))
}

// output is the part of an execution's output that becomes deltas. null means absent.
type output struct {
	DeltaOperations    []json.RawMessage `json:"delta_operations"`
	TransformedContent json.RawMessage   `json:"transformed_content"`
	CreatedBlobs       []json.RawMessage `json:"created_blobs"`
}

// derivedBlob is one item of created_blobs.
type derivedBlob struct {
	Content  json.RawMessage `json:"content"`
	Metadata json.RawMessage `json:"metadata"`
	// ProviderIDs limits the providers the derived blob's created event is matched against.
	ProviderIDs []string `json:"provider_ids"`
}

// item is one delta-to-be, before it is applied.
type item struct {
	name string
	op   *operation
	// transform, or a derived blob
	content json.RawMessage
	derived *derivedBlob
}

// Deltas returns what a completed execution writes on its blob, given the blob's current
// state: delta_operations, one delta per JSON Patch (RFC 6902) operation but test, which only
// guards; transformed_content, a transform delta at /content; created_blobs, a create_derived
// delta per blob on this blob, and a created event of the derived blob, one derivation deeper.
//
// The deltas take the next versions and are applied to the current state, which may be newer
// than BaseVersion, the version the execution read: a later version is no conflict as long as
// every operation applies (a test operation makes one depend on what was read). When one does
// not (a test that fails, a path that does not exist), or the blob does not exist or was
// deleted, the result is a *Rejection and nothing is written.
//
// Delta ids come from the execution and the delta's index. When the state already holds some
// of the execution's deltas, Deltas returns only the rest, applied to the current state; when
// it holds all of them, none. Deltas is pure.
func Deltas(s State, x Execution, now time.Time) (Result, error) {
	if err := events.ValidToken(x.ExecutionID); err != nil {
		return Result{}, fmt.Errorf("deltas of execution: execution id: %w", err)
	}
	reject := func(item, format string, args ...any) (Result, error) {
		return Result{}, &Rejection{ExecutionID: x.ExecutionID, Item: item, Reason: fmt.Sprintf(format, args...)}
	}
	items, err := parseOutput(x.Output)
	if err != nil {
		return reject("output", "%v", err)
	}
	res := Result{Written: s.Written(x.ExecutionID)}
	switch {
	case x.BlobID != s.BlobID && s.Exists():
		return Result{}, fmt.Errorf("deltas of execution %s: the state is of blob %q, the execution of %q", x.ExecutionID, s.BlobID, x.BlobID)
	case len(items) == 0 && res.Written == 0:
		return res, nil
	case !s.Exists():
		return reject("blob", "blob %q does not exist", x.BlobID)
	case x.BaseVersion < 0 || x.BaseVersion > s.Version:
		return Result{}, fmt.Errorf("deltas of execution %s: base_version %d, but blob %q is at version %d", x.ExecutionID, x.BaseVersion, x.BlobID, s.Version)
	}
	res.Created = createdEvents(&s, x, items, now)
	for i, ev := range res.Created {
		if _, err := events.Marshal(ev); err != nil {
			return reject("created_blobs["+strconv.Itoa(i)+"]", "%v", err)
		}
	}
	total := 0
	for _, it := range items {
		if it.op == nil || it.op.Op != opTest {
			total++
		}
	}
	if res.Written >= total {
		return res, nil // all written: a delivery again writes nothing
	}
	scratch := s.Clone()
	index := 0 // of the next delta
	for _, it := range items {
		if it.op != nil && it.op.Op == opTest {
			if index < res.Written {
				continue // it guarded deltas already written
			}
			if scratch.Deleted {
				return reject("blob", "blob %q was deleted", x.BlobID)
			}
			if _, err := it.op.apply(scratch.doc()); err != nil {
				return reject(it.name, "%s %s: %v", it.op.Op, it.op.Path, err)
			}
			continue
		}
		if index < res.Written {
			index++
			continue
		}
		if scratch.Deleted {
			return reject("blob", "blob %q was deleted at version %d", x.BlobID, scratch.Version)
		}
		d := events.Delta{
			ID:          ExecutionDeltaID(x.ExecutionID, index),
			BlobID:      s.BlobID,
			Version:     scratch.Version + 1,
			BaseVersion: x.BaseVersion,
			ProviderID:  x.ProviderID,
			Timestamp:   now.UTC(),
			Metadata: events.DeltaMetadata{WorkflowID: x.WorkflowID, WorkflowRevision: x.WorkflowRevision,
				ExecutionID: x.ExecutionID, StepID: x.StepID, SourceEventID: x.SourceEventID},
		}
		if err := fill(&d, &scratch, it, x.ExecutionID, index); err != nil {
			return reject(it.name, "%v", err)
		}
		if err := fit(&d); err != nil {
			return reject(it.name, "%v", err)
		}
		if err := scratch.Apply(d); err != nil {
			return reject(it.name, "%v", errors.Unwrap(err))
		}
		res.Deltas = append(res.Deltas, d)
		index++
	}
	return res, nil
}

// fill sets the delta's type, path and values for one item, reading the state it applies to.
func fill(d *events.Delta, s *State, it item, executionID string, index int) error {
	doc := s.doc()
	switch {
	case it.op != nil:
		op := *it.op
		if err := op.check(); err != nil {
			return err
		}
		d.Type, d.Path, d.From = op.Op, op.Path, op.From
		if op.Value != nil {
			v, err := canonical(op.Value)
			if err != nil {
				return fmt.Errorf("value: %w", err)
			}
			d.NewValue = v
		}
		if op.Op == opReplace || op.Op == opRemove {
			if old, ok := pointerGet(doc, op.Path); ok {
				d.OldValue = bounded(old)
			}
		}
	case it.derived != nil:
		nd, err := document{Content: it.derived.Content, Metadata: it.derived.Metadata}.canonical()
		if err != nil {
			return err
		}
		id := DerivedBlobID(executionID, derivedIndex(it.name))
		d.Type, d.Path = events.DeltaCreateDerived, "/derived"
		d.NewValue = []byte(`{"blob_id":"` + id + `","content":` + string(nd.Content) + `,"metadata":` + string(nd.Metadata) + `}`)
	default:
		c, err := canonical(it.content)
		if err != nil {
			return fmt.Errorf("transformed_content: %w", err)
		}
		d.Type, d.Path, d.NewValue, d.OldValue = events.DeltaTransform, "/content", c, bounded(doc.Content)
	}
	return nil
}

// parseOutput lists the items of an execution output in the order they are written:
// delta_operations, transformed_content, created_blobs.
func parseOutput(out any) ([]item, error) {
	if _, ok := out.(map[string]any); !ok {
		return nil, nil // not an object: nothing for the blob
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	var o output
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("want delta_operations and created_blobs as lists: %v", err)
	}
	var items []item
	for i, rawOp := range o.DeltaOperations {
		name := "delta_operations[" + strconv.Itoa(i) + "]"
		op, err := decodeOperation(rawOp)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		items = append(items, item{name: name, op: &op})
	}
	if !isNull(o.TransformedContent) {
		items = append(items, item{name: "transformed_content", content: o.TransformedContent})
	}
	for i, rawBlob := range o.CreatedBlobs {
		name := "created_blobs[" + strconv.Itoa(i) + "]"
		var b derivedBlob
		dec := json.NewDecoder(bytes.NewReader(rawBlob))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil || !isObject(rawBlob) {
			return nil, fmt.Errorf("%s: want {content, metadata, provider_ids}", name)
		}
		if !isNull(b.Metadata) && !isObject(b.Metadata) {
			return nil, fmt.Errorf("%s: metadata: want a JSON object", name)
		}
		for _, p := range b.ProviderIDs {
			if p == "" {
				return nil, fmt.Errorf("%s: provider_ids: an empty id", name)
			}
		}
		items = append(items, item{name: name, derived: &b})
	}
	return items, nil
}

// derivedIndex reads i from created_blobs[i].
func derivedIndex(name string) int {
	i, _ := strconv.Atoi(name[len("created_blobs[") : len(name)-1])
	return i
}

// createdEvents builds the created event of each derived blob, one derivation deeper than s.
func createdEvents(s *State, x Execution, items []item, now time.Time) []events.Event {
	var out []events.Event
	for _, it := range items {
		if it.derived == nil {
			continue
		}
		i := derivedIndex(it.name)
		id := DerivedBlobID(x.ExecutionID, i)
		subject, _ := events.BlobSubject(id, events.BlobCreated) // a UUID is a valid token
		out = append(out, events.Event{
			ID:      events.ID(x.ExecutionID, "derived/"+strconv.Itoa(i)+"/created"),
			Source:  events.SourceBlobs,
			Type:    events.TypeBlobCreated,
			Subject: subject,
			Time:    now.UTC(),
			Data: &events.BlobEvent{
				Kind: events.BlobCreated, BlobID: id, UserID: s.UserID, ProviderIDs: it.derived.ProviderIDs,
				Content: it.derived.Content, Metadata: it.derived.Metadata,
				DerivedFrom: &events.Derivation{BlobID: s.BlobID, ExecutionID: x.ExecutionID, Depth: s.Depth() + 1},
			},
		})
	}
	return out
}
