package blob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/memmie/memmie/events"
)

// MaxOldValue bounds a delta's old_value. Fold never reads old_value; it is left out when
// larger, so that a delta of a large blob stays within the event size limit.
const MaxOldValue = 64 << 10

// patchOptions are RFC 6902 as written: no negative indices, no HTML escaping.
func patchOptions() *jsonpatch.ApplyOptions {
	o := jsonpatch.NewApplyOptions()
	o.SupportNegativeIndices = false
	o.EscapeHTML = false
	return o
}

var (
	jsonNull        = json.RawMessage("null")
	jsonEmptyObject = json.RawMessage("{}")
)

// canonical re-encodes one JSON value compactly, with object keys sorted, numbers as written
// and no HTML escaping. The blob's content and metadata are kept in this form, so that the
// state after the same deltas is the same bytes whatever the library did to key order (its
// merge patch adds new keys in map order).
func canonical(raw []byte) (json.RawMessage, error) {
	v, err := decodeValue(raw)
	if err != nil {
		return nil, err
	}
	return encodeValue(v)
}

func decodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func encodeValue(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), jsonNull)
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// document is the blob as JSON Patch operations see it: {"content": ..., "metadata": {...}}.
type document struct {
	Content  json.RawMessage `json:"content"`
	Metadata json.RawMessage `json:"metadata"`
}

func (d document) bytes() []byte {
	var b bytes.Buffer
	b.WriteString(`{"content":`)
	b.Write(orNull(d.Content))
	b.WriteString(`,"metadata":`)
	if len(d.Metadata) == 0 {
		b.Write(jsonEmptyObject)
	} else {
		b.Write(d.Metadata)
	}
	b.WriteString("}")
	return b.Bytes()
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return jsonNull
	}
	return raw
}

// parseDocument reads {content, metadata}, canonically. Content may be absent (null); metadata
// may be absent ({}) and otherwise must stay an object.
func parseDocument(raw []byte) (document, error) {
	var d document
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return document{}, fmt.Errorf("blob document: %w", err)
	}
	return d.canonical()
}

func (d document) canonical() (document, error) {
	var err error
	if d.Content, err = canonical(orNull(d.Content)); err != nil {
		return document{}, fmt.Errorf("content: %w", err)
	}
	if isNull(d.Metadata) {
		d.Metadata = jsonEmptyObject
	}
	if !isObject(d.Metadata) {
		return document{}, errors.New("metadata: must stay a JSON object")
	}
	if d.Metadata, err = canonical(d.Metadata); err != nil {
		return document{}, fmt.Errorf("metadata: %w", err)
	}
	return d, nil
}

// Operations of JSON Patch (RFC 6902). test writes no delta: it only guards the others.
const (
	opAdd     = "add"
	opRemove  = "remove"
	opReplace = "replace"
	opMove    = "move"
	opCopy    = "copy"
	opTest    = "test"
)

// operation is one RFC 6902 operation on the blob's document.
type operation struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// check validates an operation's shape: a known op, its members, and paths inside /content
// or /metadata (the document's two members cannot be renamed or dropped as a whole).
func (o operation) check() error {
	switch o.Op {
	case opAdd, opReplace, opTest:
		if len(o.Value) == 0 {
			return fmt.Errorf("%s needs a value", o.Op)
		}
	case opMove, opCopy:
		if err := checkPath("from", o.From); err != nil {
			return err
		}
		if o.Op == opMove && strings.HasPrefix(o.Path, o.From+"/") {
			return fmt.Errorf("move from %q into itself (%q)", o.From, o.Path)
		}
	case opRemove:
	case "":
		return errors.New("op is required")
	default:
		return fmt.Errorf("unknown op %q (use add, remove, replace, move, copy or test)", o.Op)
	}
	return checkPath("path", o.Path)
}

func checkPath(field, p string) error {
	for _, root := range []string{"/content", "/metadata"} {
		if p == root || strings.HasPrefix(p, root+"/") {
			// The library reads an empty key as the object that holds it.
			if strings.Contains(p+"/", "//") {
				return fmt.Errorf("%s %q: an empty key is not supported", field, p)
			}
			return nil
		}
	}
	return fmt.Errorf("%s %q: want a JSON pointer under /content or /metadata", field, p)
}

// decodeOperation reads one operation. Member names are matched exactly, as RFC 6902 has them
// (encoding/json alone would take "Path" for "path"); other members are ignored.
func decodeOperation(raw json.RawMessage) (operation, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return operation{}, errors.New("want a JSON Patch operation {op, path, ...}")
	}
	var o operation
	for name, dst := range map[string]*string{"op": &o.Op, "path": &o.Path, "from": &o.From} {
		if v, ok := m[name]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return operation{}, fmt.Errorf("%s: want a string", name)
			}
		}
	}
	o.Value = m["value"]
	return o, o.check()
}

// apply applies the operation to the document with the library and returns the new document.
// An operation below one member (/metadata/summary) is applied to that member alone, so that
// a small change of the metadata does not re-read a large content.
func (o operation) apply(d document) (document, error) {
	if err := o.check(); err != nil {
		return document{}, err
	}
	if o.Op == opMove && o.From == o.Path {
		// A no-op (RFC 6902 4.4), which the library gets wrong for some keys; the value must
		// still exist.
		if _, ok := pointerGet(d, o.From); !ok {
			return document{}, fmt.Errorf("move from %q: no value there", o.From)
		}
		return d, nil
	}
	if sub, ok := o.within("/metadata", d.Metadata); ok {
		m, err := sub.patch(d.Metadata)
		if err != nil {
			return document{}, err
		}
		if !isObject(m) {
			return document{}, errors.New("metadata must stay a JSON object")
		}
		if d.Metadata, err = canonical(m); err != nil {
			return document{}, err
		}
		return d, nil
	}
	if sub, ok := o.within("/content", d.Content); ok {
		c, err := sub.patch(d.Content)
		if err != nil {
			return document{}, err
		}
		if d.Content, err = canonical(c); err != nil {
			return document{}, err
		}
		return d, nil
	}
	return o.patchDocument(d)
}

// patchDocument applies the operation to the whole document with the library.
func (o operation) patchDocument(d document) (document, error) {
	out, err := o.patch(d.bytes())
	if err != nil {
		return document{}, err
	}
	var d2 document
	if err := json.Unmarshal(out, &d2); err != nil {
		return document{}, err
	}
	if !isObject(d2.Metadata) {
		return document{}, errors.New("metadata must stay a JSON object")
	}
	// A remove of /content leaves no content: null, as for a blob created without one.
	return d2.canonical()
}

// within returns the operation relative to member when its path (and from) point strictly
// below it and member is an object or a list, the only documents the library patches alone.
func (o operation) within(member string, value json.RawMessage) (operation, bool) {
	t := bytes.TrimSpace(value)
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return operation{}, false
	}
	below := func(p string) (string, bool) {
		rest, ok := strings.CutPrefix(p, member+"/")
		return "/" + rest, ok
	}
	var ok bool
	if o.Path, ok = below(o.Path); !ok {
		return operation{}, false
	}
	if o.From != "" {
		if o.From, ok = below(o.From); !ok {
			return operation{}, false
		}
	}
	return o, true
}

// patch applies the operation to a JSON document with the library.
func (o operation) patch(doc []byte) ([]byte, error) {
	raw, err := json.Marshal([]operation{o})
	if err != nil {
		return nil, err
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return nil, err
	}
	return p.ApplyWithOptions(doc, patchOptions())
}

// pointerGet returns the value at an RFC 6901 pointer of the document, or false.
func pointerGet(d document, ptr string) (json.RawMessage, bool) {
	raw := d.bytes()
	if rest, ok := strings.CutPrefix(ptr, "/metadata"); ok && (rest == "" || rest[0] == '/') {
		raw, ptr = d.Metadata, rest
	} else if rest, ok := strings.CutPrefix(ptr, "/content"); ok && (rest == "" || rest[0] == '/') {
		raw, ptr = orNull(d.Content), rest
	}
	v, err := decodeValue(raw)
	if err != nil {
		return nil, false
	}
	for _, tok := range strings.Split(ptr, "/")[1:] {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch node := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = node[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(node) || (len(tok) > 1 && tok[0] == '0') {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	out, err := encodeValue(v)
	return out, err == nil
}

// bounded returns raw, or nil when it is larger than MaxOldValue.
func bounded(raw json.RawMessage) json.RawMessage {
	if len(raw) > MaxOldValue {
		return nil
	}
	return raw
}

// DeltaEvent returns the event that carries a delta on memmie.deltas.<blob_id>. Its id is the
// delta's: its Nats-Msg-Id.
func DeltaEvent(d events.Delta) events.Event {
	subject, _ := events.DeltaSubject(d.BlobID) // Fold and Decide only make deltas of valid blob ids
	return events.Event{ID: d.ID, Source: events.SourceBlobs, Type: events.TypeDelta, Subject: subject, Time: d.Timestamp, Data: &d}
}

// fit makes the delta fit in an event: without its old_value if need be (Fold never reads
// it), else it is an error.
func fit(d *events.Delta) error {
	_, err := events.Marshal(DeltaEvent(*d))
	if err != nil && d.OldValue != nil {
		d.OldValue = nil
		_, err = events.Marshal(DeltaEvent(*d))
	}
	return err
}
