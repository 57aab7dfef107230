package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/wI2L/jsondiff"

	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/app/views"
	"github.com/memmie/memmie/internal/core/blob"
)

// BlobViews is what the blob endpoints need of the projections' tables.
type BlobViews interface {
	Blob(ctx context.Context, id string) (blob.State, error)
	BlobAt(ctx context.Context, id string, version int64) (blob.State, error)
	BlobDeltas(ctx context.Context, id string, after int64, limit int) (views.BlobDeltaPage, error)
}

// Limits of GET /v1/blobs/{id}/deltas.
const (
	DefaultDeltaLimit = 100
	MaxDeltaLimit     = 1000
)

// getBlob answers GET /v1/blobs/{id} from the blobs projection: the blob's state (blob.State's
// JSON) at its last version, or at ?version=N.
func (a *API) getBlob(w http.ResponseWriter, r *http.Request) {
	id, err := a.blobID(r)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	var s blob.State
	if v := r.URL.Query().Get("version"); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 1 {
			a.failBlob(w, r, badRequest("version %q: want a version from 1", v))
			return
		}
		s, err = a.cfg.Views.BlobAt(r.Context(), id, n)
	} else {
		s, err = a.cfg.Views.Blob(r.Context(), id)
	}
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, &s)
}

// blobDeltas answers GET /v1/blobs/{id}/deltas from the blobs projection: the blob's deltas in
// version order, those after ?after= (a version; "next" of the page before), ?limit= at a time.
func (a *API) blobDeltas(w http.ResponseWriter, r *http.Request) {
	id, err := a.blobID(r)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	q := r.URL.Query()
	var after int64
	if s := q.Get("after"); s != "" {
		if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
			a.failBlob(w, r, badRequest("after %q: want a version (the next of the page before)", s))
			return
		}
	}
	limit := DefaultDeltaLimit
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > MaxDeltaLimit {
			a.failBlob(w, r, badRequest("limit %q: want 1 to %d", s, MaxDeltaLimit))
			return
		}
	}
	page, err := a.cfg.Views.BlobDeltas(r.Context(), id, after, limit)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// BlobDiff is GET /v1/blobs/{id}/diff: the RFC 6902 patch that turns the blob's document at
// version From into its document at version To.
type BlobDiff struct {
	BlobID string         `json:"blob_id"`
	From   int64          `json:"from"`
	To     int64          `json:"to"`
	Patch  jsondiff.Patch `json:"patch"`
}

// blobDocument is what a diff compares of a blob: the members its deltas change, under the
// pointers the deltas name (/content/..., /metadata/..., /derived), and whether it was
// deleted. At version 0, before its create, it has no content, empty metadata and no derived
// blob.
type blobDocument struct {
	Content  json.RawMessage `json:"content"`
	Metadata json.RawMessage `json:"metadata"`
	Deleted  bool            `json:"deleted"`
	Derived  []string        `json:"derived"`
}

func documentOf(s *blob.State) blobDocument {
	d := blobDocument{Content: s.Content, Metadata: s.Metadata, Deleted: s.Deleted, Derived: s.Derived}
	if len(d.Content) == 0 {
		d.Content = json.RawMessage("null")
	}
	if len(d.Metadata) == 0 {
		d.Metadata = json.RawMessage("{}")
	}
	if d.Derived == nil {
		d.Derived = []string{}
	}
	return d
}

// blobDiff answers GET /v1/blobs/{id}/diff?from=N&to=M from the blobs projection: the patch
// from the blob's document at version from (default to-1) to that at version to (default the
// last), computed by wI2L/jsondiff.
func (a *API) blobDiff(w http.ResponseWriter, r *http.Request) {
	id, err := a.blobID(r)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	last, err := a.cfg.Views.Blob(r.Context(), id)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	q := r.URL.Query()
	version := func(name string, def int64) (int64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, badRequest("%s %q: want a version from 0 (before the blob was created) to %d", name, v, last.Version)
		}
		if n > last.Version {
			return 0, badRequest("%s %d: blob %s has versions 1 to %d", name, n, id, last.Version)
		}
		return n, nil
	}
	to, err := version("to", last.Version)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	from, err := version("from", max(to-1, 0))
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	doc := func(v int64) (blobDocument, error) {
		switch v {
		case 0:
			return documentOf(&blob.State{}), nil
		case last.Version:
			return documentOf(&last), nil
		}
		s, err := a.cfg.Views.BlobAt(r.Context(), id, v)
		return documentOf(&s), err
	}
	src, err := doc(from)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	tgt, err := doc(to)
	if err != nil {
		a.failBlob(w, r, err)
		return
	}
	patch, err := diffDocuments(src, tgt)
	if err != nil {
		a.fail(w, r, fmt.Errorf("diff blob %s from version %d to %d: %w", id, from, to, err))
		return
	}
	writeJSON(w, http.StatusOK, BlobDiff{BlobID: id, From: from, To: to, Patch: patch})
}

// diffDocuments is the RFC 6902 patch from src to tgt. Numbers stay as written (json.Number):
// a float64 would round an integer beyond 2^53.
// DiffBlob is the JSON Patch from one state of a blob to another, as GET
// /v1/blobs/{id}/diff answers it (the web UI shows the same).
func DiffBlob(from, to *blob.State) (jsondiff.Patch, error) {
	return diffDocuments(documentOf(from), documentOf(to))
}

func diffDocuments(src, tgt blobDocument) (jsondiff.Patch, error) {
	sb, err := json.Marshal(src)
	if err != nil {
		return nil, err
	}
	tb, err := json.Marshal(tgt)
	if err != nil {
		return nil, err
	}
	patch, err := jsondiff.CompareJSON(sb, tb, jsondiff.UnmarshalFunc(func(b []byte, v any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		return d.Decode(v)
	}))
	if patch == nil {
		patch = jsondiff.Patch{}
	}
	return patch, err
}

// blobID is the blob id of the request's path.
func (a *API) blobID(r *http.Request) (string, error) {
	if a.cfg.Views == nil {
		return "", errNoDatabase
	}
	id := r.PathValue("id")
	if err := events.ValidToken(id); err != nil {
		return "", badRequest("blob id: %v", err)
	}
	return id, nil
}

// failBlob is failView, with the blobs' own errors.
func (a *API) failBlob(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, views.ErrBlobNotFound), errors.Is(err, views.ErrVersionNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	default:
		a.failView(w, r, err)
	}
}
