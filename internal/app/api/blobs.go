package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

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
