package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/internal/registry"
)

// Definition is how the API shows one revision of a definition.
type Definition struct {
	Kind         definitions.Kind `json:"kind"`
	ID           string           `json:"id"`
	Revision     int              `json:"revision"`
	Active       bool             `json:"active"`
	RegisteredAt time.Time        `json:"registered_at"`
	// Definition is the canonical JSON.
	Definition json.RawMessage `json:"definition"`
}

// DefinitionList is the answer of GET /v1/{kind}s.
type DefinitionList struct {
	Items []Definition `json:"items"`
}

func definitionOf(rev registry.Revision) Definition {
	return Definition{
		Kind: rev.Kind, ID: rev.ID, Revision: rev.Revision, Active: rev.Active,
		RegisteredAt: rev.Time.UTC(), Definition: rev.Canonical,
	}
}

func (a *API) listDefinitions(kind definitions.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		revs := a.cfg.Registry.List(kind)
		list := DefinitionList{Items: make([]Definition, len(revs))}
		for i, rev := range revs {
			list.Items[i] = definitionOf(rev)
		}
		writeJSON(w, http.StatusOK, list)
	}
}

func (a *API) getDefinition(kind definitions.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var (
			rev registry.Revision
			ok  bool
		)
		if q := r.URL.Query().Get("revision"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 1 {
				a.fail(w, r, badRequest("revision %q: want a positive integer", q))
				return
			}
			rev, ok = a.cfg.Registry.Get(kind, id, n)
			if !ok {
				a.fail(w, r, fmt.Errorf("%s %q revision %d: %w", kind, id, n, registry.ErrNotFound))
				return
			}
		} else if rev, ok = a.cfg.Registry.Current(kind, id); !ok {
			a.fail(w, r, fmt.Errorf("%s %q: %w", kind, id, registry.ErrNotFound))
			return
		}
		writeJSON(w, http.StatusOK, definitionOf(rev))
	}
}

// putDefinition registers the body, YAML or JSON, as the definition with the path's id. The
// body must name the same id.
func (a *API) putDefinition(kind definitions.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
		if err != nil {
			a.fail(w, r, fmt.Errorf("read body: %w", err))
			return
		}
		if len(body) == 0 {
			a.fail(w, r, badRequest("the body is empty: send the %s as YAML or JSON", kind))
			return
		}
		if err := checkContentType(r, append(slices.Clone(jsonTypes), yamlTypes...)...); err != nil {
			a.fail(w, r, err)
			return
		}
		// Problems name the definition the way the registry does: workflows/<id>:line.
		def, err := definitions.Parse(string(kind)+"s/"+id, body, kind)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if got := def.DefinitionID(); got != id {
			field := "id"
			if kind == definitions.KindProvider {
				field = "provider.id"
			}
			a.fail(w, r, definitions.Problems{{File: string(kind) + "s/" + id, Line: 1, Field: field,
				Message: fmt.Sprintf("the body's id %q is not the path's id %q", got, id)}})
			return
		}
		results, err := a.cfg.Registry.Register(r.Context(), def)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, results[0])
	}
}

func (a *API) deleteDefinition(kind definitions.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, err := a.cfg.Registry.Deactivate(r.Context(), kind, r.PathValue("id"))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}
