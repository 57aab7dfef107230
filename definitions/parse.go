package definitions

import (
	"encoding/json"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Definition is a *Schema, a *Workflow or a *Provider.
type Definition interface {
	// Kind says which of the three it is.
	Kind() Kind
	// DefinitionID is the id it is registered under.
	DefinitionID() string
}

func (*Schema) Kind() Kind   { return KindSchema }
func (*Workflow) Kind() Kind { return KindWorkflow }
func (*Provider) Kind() Kind { return KindProvider }

func (s *Schema) DefinitionID() string   { return s.ID }
func (w *Workflow) DefinitionID() string { return w.ID }
func (p *Provider) DefinitionID() string { return p.Provider.ID }

// Canonical returns the canonical JSON of a definition: encoding/json of the struct, whose map
// keys are sorted. Two definitions with the same canonical JSON are the same registration, so
// re-registering an unchanged file is a no-op. Compiled forms are not part of it.
func Canonical(def Definition) ([]byte, error) {
	b, err := json.Marshal(def)
	if err != nil {
		return nil, fmt.Errorf("canonical json of %s %s: %w", def.Kind(), def.DefinitionID(), err)
	}
	return b, nil
}

// ParseSchema reads one schema from YAML or JSON, checks it and compiles its definition. file
// names the document in problems. The error is Problems.
func ParseSchema(file string, data []byte) (*Schema, error) {
	def, r := parse(file, data, KindSchema)
	if err := r.probs.Err(); err != nil {
		return nil, err
	}
	return def.(*Schema), nil
}

// ParseWorkflow reads one workflow from YAML or JSON, checks it and compiles it (w.Compiled).
// file names the document in problems. The error is Problems.
func ParseWorkflow(file string, data []byte) (*Workflow, error) {
	def, r := parse(file, data, KindWorkflow)
	if err := r.probs.Err(); err != nil {
		return nil, err
	}
	return def.(*Workflow), nil
}

// ParseProvider reads one provider from YAML or JSON and checks it. file names the document
// in problems. The error is Problems.
func ParseProvider(file string, data []byte) (*Provider, error) {
	def, r := parse(file, data, KindProvider)
	if err := r.probs.Err(); err != nil {
		return nil, err
	}
	return def.(*Provider), nil
}

// Parse reads one definition of the given kind. With an empty kind the content tells: a
// top-level provider: makes a provider, definition: a schema, steps: a workflow. The error is
// Problems.
func Parse(file string, data []byte, kind Kind) (Definition, error) {
	def, r := parse(file, data, kind)
	if err := r.probs.Err(); err != nil {
		return nil, err
	}
	return def, nil
}

// parse reads, decodes, checks and compiles one definition. It returns the definition even
// when there are problems, as far as it could be decoded, or nil when nothing could.
func parse(file string, data []byte, kind Kind) (Definition, *reporter) {
	r := newReporter(file)
	defer func() { r.probs.sort() }()
	root := parseDocument(r, data)
	if root == nil {
		return nil, r
	}
	if kind == "" {
		if kind = detectKind(root); kind == "" {
			r.at(1, "", "cannot tell the kind of definition: expected a top-level provider: (provider), definition: (schema) or steps: (workflow)")
			return nil, r
		}
	}
	d := &decoder{reporter: r}
	switch kind {
	case KindSchema:
		s := d.schema(root)
		if !d.exhausted {
			s.Compiled = checkSchema(r, s)
		}
		return s, r
	case KindWorkflow:
		w := d.workflow(root)
		if !d.exhausted {
			w.Compiled = checkWorkflow(r, w)
		}
		return w, r
	case KindProvider:
		p := d.provider(root)
		if !d.exhausted {
			checkProvider(r, p)
		}
		return p, r
	}
	r.at(1, "", "unknown kind of definition %q", kind)
	return nil, r
}

// detectKind tells the kind of a document by its top-level keys.
func detectKind(root *yaml.Node) Kind {
	if root.Kind != yaml.MappingNode {
		return ""
	}
	keys := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		keys[root.Content[i].Value] = true
	}
	switch {
	case keys["provider"]:
		return KindProvider
	case keys["definition"]:
		return KindSchema
	case keys["steps"]:
		return KindWorkflow
	}
	return ""
}

// Compile checks the workflow and compiles its expressions into w.Compiled. It works on a
// workflow decoded from JSON as well as on one read by the loader, and gives the same result
// for the same workflow. On problems w.Compiled is left nil and the error is Problems.
func (w *Workflow) Compile() error {
	r := newReporter("")
	compiled := checkWorkflow(r, w)
	if err := r.probs.Err(); err != nil {
		return err
	}
	w.Compiled = compiled
	return nil
}

// Compile checks the schema and compiles its definition into s.Compiled. On problems
// s.Compiled is left nil and the error is Problems.
func (s *Schema) Compile() error {
	r := newReporter("")
	compiled := checkSchema(r, s)
	if err := r.probs.Err(); err != nil {
		return err
	}
	s.Compiled = compiled
	return nil
}

// Compile checks the provider: its ids, priorities, events and conditions (regular
// expressions included). The error is Problems.
func (p *Provider) Compile() error {
	r := newReporter("")
	checkProvider(r, p)
	return r.probs.Err()
}
