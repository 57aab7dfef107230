package registry

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/memmie/memmie/definitions"
	"github.com/memmie/memmie/events"
	"github.com/memmie/memmie/internal/jetstream/stream"
)

// MaxCanonicalSize bounds a definition's canonical JSON, so that its event fits in one message.
const MaxCanonicalSize = events.MaxEventSize - 4<<10

// Result is the outcome of registering or deactivating one definition.
type Result struct {
	Kind definitions.Kind `json:"kind"`
	ID   string           `json:"id"`
	// Revision is the definition's current revision after the call.
	Revision int `json:"revision"`
	// Changed is false when the call was a no-op: the same canonical JSON was already the
	// active current revision, or the definition was already deactivated.
	Changed bool `json:"changed"`
	// Active is false after a deactivation.
	Active bool `json:"active"`
}

// InUseError is the error of a deactivation refused because active definitions name the one
// to deactivate. It matches ErrInUse.
type InUseError struct {
	Kind definitions.Kind
	ID   string
	// By names the active definitions that use it, as "<kind> <id>".
	By []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s %q is used by %s", e.Kind, e.ID, strings.Join(e.By, ", "))
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// kindOrder is the order of registration: what a definition names is registered before it.
var kindOrder = map[definitions.Kind]int{definitions.KindSchema: 0, definitions.KindWorkflow: 1, definitions.KindProvider: 2}

// RegisterSet registers every definition of set (see Register).
func (r *Registry) RegisterSet(ctx context.Context, set *definitions.Set) ([]Result, error) {
	var defs []definitions.Definition
	for _, s := range set.Schemas {
		defs = append(defs, s)
	}
	for _, w := range set.Workflows {
		defs = append(defs, w)
	}
	for _, p := range set.Providers {
		defs = append(defs, p)
	}
	return r.Register(ctx, defs...)
}

// Register validates defs, on their own and together with the active registered definitions,
// and registers them: schemas, then workflows, then providers, each kind in id order. Results
// come in that order. When the set is invalid nothing is registered and the error is
// definitions.Problems. When it fails part-way, the definitions before the failure stay
// registered (see the package documentation).
//
// Register returns once this process's view holds every revision it registered.
func (r *Registry) Register(ctx context.Context, defs ...definitions.Definition) ([]Result, error) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if err := r.Sync(ctx); err != nil {
		return nil, err
	}
	defs = slices.Clone(defs)
	slices.SortStableFunc(defs, func(a, b definitions.Definition) int {
		return cmp.Or(cmp.Compare(kindOrder[a.Kind()], kindOrder[b.Kind()]), cmp.Compare(a.DefinitionID(), b.DefinitionID()))
	})
	canon, err := r.validate(defs)
	if err != nil {
		return nil, err
	}
	results := make([]Result, 0, len(defs))
	for i, def := range defs {
		res, err := r.register(ctx, def, canon[i])
		if err != nil {
			return results, err
		}
		if res.Changed {
			r.log.Info("definition registered", "kind", res.Kind, "id", res.ID, "revision", res.Revision)
		}
		results = append(results, res)
	}
	return results, nil
}

// origin names a definition in problems that have no file.
func origin(kind definitions.Kind, id string) string { return string(kind) + "s/" + id }

// validate checks each definition, then the references between them and the active registered
// ones. It returns the canonical JSON of each definition.
func (r *Registry) validate(defs []definitions.Definition) ([][]byte, error) {
	var probs definitions.Problems
	addProblems := func(kind definitions.Kind, id string, err error) error {
		var ps definitions.Problems
		if !errors.As(err, &ps) {
			return err
		}
		for _, p := range ps {
			if p.File == "" {
				p.File = origin(kind, id)
			}
			probs = append(probs, p)
		}
		return nil
	}

	canon := make([][]byte, len(defs))
	seen := map[key]bool{}
	for i, def := range defs {
		if def == nil || isNil(def) {
			return nil, errors.New("registry: nil definition")
		}
		kind, id := def.Kind(), def.DefinitionID()
		field := "id"
		if kind == definitions.KindProvider {
			field = "provider.id"
		}
		if _, err := events.DefinitionSubject(string(kind), id); err != nil {
			probs = append(probs, definitions.Problem{File: origin(kind, id), Field: field, Message: fmt.Sprintf("invalid id: %v", err)})
			continue
		}
		if seen[key{kind, id}] {
			probs = append(probs, definitions.Problem{File: origin(kind, id), Field: field, Message: fmt.Sprintf("%s %q is given twice", kind, id)})
			continue
		}
		seen[key{kind, id}] = true
		if err := addProblems(kind, id, compile(def)); err != nil {
			return nil, err
		}
		b, err := definitions.Canonical(def)
		if err != nil {
			return nil, err
		}
		if len(b) > MaxCanonicalSize {
			probs = append(probs, definitions.Problem{File: origin(kind, id), Message: fmt.Sprintf(
				"the definition's canonical JSON has %d bytes, more than the limit of %d", len(b), MaxCanonicalSize)})
		}
		canon[i] = b
	}
	if len(probs) > 0 {
		return nil, probs
	}

	// References: the new definitions win over the registered ones with their id.
	schemas := map[string]*definitions.Schema{}
	workflows := map[string]*definitions.Workflow{}
	newSchemas := map[string]bool{}
	for _, rev := range r.activeRevisions(definitions.KindSchema) {
		schemas[rev.ID] = rev.Def.(*definitions.Schema)
	}
	for _, rev := range r.activeRevisions(definitions.KindWorkflow) {
		workflows[rev.ID] = rev.Def.(*definitions.Workflow)
	}
	var checkWorkflows []*definitions.Workflow
	var checkProviders []*definitions.Provider
	for _, def := range defs {
		switch d := def.(type) {
		case *definitions.Schema:
			schemas[d.ID] = d
			newSchemas[d.ID] = true
		case *definitions.Workflow:
			workflows[d.ID] = d
			checkWorkflows = append(checkWorkflows, d)
		case *definitions.Provider:
			checkProviders = append(checkProviders, d)
		}
	}
	// A registered workflow is checked again when the set changes one of its schemas.
	for _, rev := range r.activeRevisions(definitions.KindWorkflow) {
		w := rev.Def.(*definitions.Workflow)
		if workflows[w.ID] == w && (newSchemas[w.InputSchemaID] || newSchemas[w.OutputSchemaID]) {
			checkWorkflows = append(checkWorkflows, w)
		}
	}
	allSchemas := mapValues(schemas)
	// Providers only need the workflows' ids: stubs keep the workflows' own problems out.
	var workflowIDs []*definitions.Workflow
	for _, w := range mapValues(workflows) {
		workflowIDs = append(workflowIDs, &definitions.Workflow{ID: w.ID})
	}
	for _, w := range checkWorkflows {
		set := definitions.Set{Schemas: allSchemas, Workflows: []*definitions.Workflow{w}}
		if err := addProblems(definitions.KindWorkflow, w.ID, set.Validate()); err != nil {
			return nil, err
		}
	}
	for _, p := range checkProviders {
		set := definitions.Set{Workflows: workflowIDs, Providers: []*definitions.Provider{p}}
		if err := addProblems(definitions.KindProvider, p.Provider.ID, set.Validate()); err != nil {
			return nil, err
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return canon, nil
}

func isNil(def definitions.Definition) bool {
	switch d := def.(type) {
	case *definitions.Schema:
		return d == nil
	case *definitions.Workflow:
		return d == nil
	case *definitions.Provider:
		return d == nil
	}
	return true
}

// compile checks and compiles a definition that was not compiled yet (one decoded from JSON,
// say). Providers have no compiled form and are always checked.
func compile(def definitions.Definition) error {
	switch d := def.(type) {
	case *definitions.Schema:
		if d.Compiled == nil {
			return d.Compile()
		}
	case *definitions.Workflow:
		if d.Compiled == nil {
			return d.Compile()
		}
	case *definitions.Provider:
		return d.Compile()
	}
	return nil
}

func mapValues[T any](m map[string]*T) []*T {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]*T, len(ids))
	for i, id := range ids {
		out[i] = m[id]
	}
	return out
}

// activeRevisions returns the active current revisions of a kind.
func (r *Registry) activeRevisions(kind definitions.Kind) []Revision {
	var out []Revision
	for _, rev := range r.List(kind) {
		if rev.Active {
			out = append(out, rev)
		}
	}
	return out
}

// register publishes one definition's next revision, unless it is unchanged.
func (r *Registry) register(ctx context.Context, def definitions.Definition, canonical []byte) (Result, error) {
	kind, id := def.Kind(), def.DefinitionID()
	subject, err := events.DefinitionSubject(string(kind), id)
	if err != nil {
		return Result{}, err
	}
	sum := sha256.Sum256(canonical)
	for attempt := 1; ; attempt++ {
		cur, ok, lastSeq := r.current(kind, id)
		if ok && cur.Active && bytes.Equal(cur.Canonical, canonical) {
			return Result{Kind: kind, ID: id, Revision: cur.Revision, Active: true}, nil
		}
		next := cur.Revision + 1
		// The id names the content: a racing writer of other content gets a conflict, not a
		// duplicate that would hide its loss.
		ev := events.Event{
			ID:      events.ID("definition/"+string(kind)+"/"+id, fmt.Sprintf("revision/%d/%s", next, hex.EncodeToString(sum[:16]))),
			Source:  events.SourceDefinitions,
			Type:    events.TypeDefinitionRegistered,
			Subject: subject,
			Time:    r.cfg.Now().UTC(),
			Data:    &events.DefinitionRegistered{Kind: string(kind), ID: id, Revision: next, Definition: canonical},
		}
		ok, err := r.append(ctx, ev, lastSeq, attempt)
		if err != nil {
			return Result{}, fmt.Errorf("register %s %s revision %d: %w", kind, id, next, err)
		}
		if ok {
			return Result{Kind: kind, ID: id, Revision: next, Changed: true, Active: true}, nil
		}
	}
}

// Deactivate deactivates a definition: it stays in its history, but is no longer active. It
// returns ErrNotFound for a definition never registered, an *InUseError when active
// definitions name it, and Changed false when it was inactive already.
func (r *Registry) Deactivate(ctx context.Context, kind definitions.Kind, id string) (Result, error) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	subject, err := events.DefinitionSubject(string(kind), id)
	if err != nil {
		return Result{}, fmt.Errorf("deactivate %s %q: %w", kind, id, ErrNotFound)
	}
	if err := r.Sync(ctx); err != nil {
		return Result{}, err
	}
	for attempt := 1; ; attempt++ {
		cur, ok, lastSeq := r.current(kind, id)
		if !ok {
			return Result{}, fmt.Errorf("deactivate %s %q: %w", kind, id, ErrNotFound)
		}
		if !cur.Active {
			return Result{Kind: kind, ID: id, Revision: cur.Revision}, nil
		}
		if by := r.usedBy(kind, id); len(by) > 0 {
			return Result{}, &InUseError{Kind: kind, ID: id, By: by}
		}
		ev := events.Event{
			ID:      events.ID("definition/"+string(kind)+"/"+id, fmt.Sprintf("revision/%d/deactivated", cur.Revision)),
			Source:  events.SourceDefinitions,
			Type:    events.TypeDefinitionDeactivated,
			Subject: subject,
			Time:    r.cfg.Now().UTC(),
			Data:    &events.DefinitionDeactivated{Kind: string(kind), ID: id, Revision: cur.Revision},
		}
		ok, err := r.append(ctx, ev, lastSeq, attempt)
		if err != nil {
			return Result{}, fmt.Errorf("deactivate %s %s: %w", kind, id, err)
		}
		if ok {
			r.log.Info("definition deactivated", "kind", kind, "id", id, "revision", cur.Revision)
			return Result{Kind: kind, ID: id, Revision: cur.Revision, Changed: true}, nil
		}
	}
}

// usedBy names the active definitions that reference a schema or a workflow.
func (r *Registry) usedBy(kind definitions.Kind, id string) []string {
	var by []string
	switch kind {
	case definitions.KindSchema:
		for _, rev := range r.activeRevisions(definitions.KindWorkflow) {
			if w := rev.Def.(*definitions.Workflow); w.InputSchemaID == id || w.OutputSchemaID == id {
				by = append(by, fmt.Sprintf("workflow %q", w.ID))
			}
		}
	case definitions.KindWorkflow:
		for _, rev := range r.activeRevisions(definitions.KindProvider) {
			for _, b := range rev.Def.(*definitions.Provider).Workflows {
				if b.WorkflowID == id {
					by = append(by, fmt.Sprintf("provider %q", rev.ID))
					break
				}
			}
		}
	}
	return by
}

// append stores ev on its subject, expecting lastSeq there: the sequence the view knew when ev
// was decided. It returns false after a conflict, once the view has caught up, so that the
// caller decides again; true once the view holds ev.
func (r *Registry) append(ctx context.Context, ev events.Event, lastSeq uint64, attempt int) (bool, error) {
	data, err := events.Marshal(ev)
	if err != nil {
		return false, err
	}
	ack, err := stream.Append(ctx, r.js, r.cfg.Stream, []stream.Msg{{Subject: ev.Subject, Data: data, ID: ev.ID}},
		stream.Expect{FilterSubject: ev.Subject, LastSubjectSeq: lastSeq})
	if errors.Is(err, stream.ErrConflict) {
		if attempt >= r.cfg.MaxAttempts {
			return false, fmt.Errorf("gave up after %d conflicting attempts: %w", attempt, err)
		}
		r.log.Debug("definition write conflict, catching up", "subject", ev.Subject, "attempt", attempt)
		return false, r.Sync(ctx)
	}
	if err != nil {
		return false, err
	}
	return true, r.WaitFor(ctx, ack.LastSeq)
}
