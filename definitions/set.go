package definitions

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Set is a set of definitions that must be consistent with each other: workflows name
// schemas that exist, providers name workflows that exist, and no id is used twice within a
// kind.
type Set struct {
	Schemas   []*Schema
	Workflows []*Workflow
	Providers []*Provider

	// origins tells where each definition read by Load came from, for problems.
	origins map[Definition]*reporter
}

// Add adds definitions to the set; Validate checks them.
func (s *Set) Add(defs ...Definition) {
	for _, def := range defs {
		switch def := def.(type) {
		case *Schema:
			s.Schemas = append(s.Schemas, def)
		case *Workflow:
			s.Workflows = append(s.Workflows, def)
		case *Provider:
			s.Providers = append(s.Providers, def)
		}
	}
}

// Schema returns the first schema with the id, or nil.
func (s *Set) Schema(id string) *Schema {
	for _, x := range s.Schemas {
		if x.ID == id {
			return x
		}
	}
	return nil
}

// Workflow returns the first workflow with the id, or nil.
func (s *Set) Workflow(id string) *Workflow {
	for _, x := range s.Workflows {
		if x.ID == id {
			return x
		}
	}
	return nil
}

// Provider returns the first provider with the id, or nil.
func (s *Set) Provider(id string) *Provider {
	for _, x := range s.Providers {
		if x.Provider.ID == id {
			return x
		}
	}
	return nil
}

// Validate checks the references between the definitions of the set: duplicate ids within a
// kind, workflows naming unknown schemas (or a schema of the other type), and providers
// naming unknown workflows. It does not re-check each definition on its own; Load and the
// Parse functions do that. The error is Problems.
func (s *Set) Validate() error {
	var probs Problems
	report := func(def Definition, field, format string, args ...any) {
		r := s.origin(def)
		r.add(field, format, args...)
		probs = append(probs, r.probs[len(r.probs)-1])
	}
	where := func(def Definition, field string) string {
		r := s.origin(def)
		if r.file == "" {
			return "another definition"
		}
		return fmt.Sprintf("%s:%d", r.file, r.line(field))
	}

	schemas := map[string]*Schema{}
	for _, x := range s.Schemas {
		if first, dup := schemas[x.ID]; dup {
			report(x, "id", "duplicate schema id %q (also in %s)", x.ID, where(first, "id"))
			continue
		}
		schemas[x.ID] = x
	}
	workflows := map[string]*Workflow{}
	for _, w := range s.Workflows {
		if first, dup := workflows[w.ID]; dup {
			report(w, "id", "duplicate workflow id %q (also in %s)", w.ID, where(first, "id"))
		} else {
			workflows[w.ID] = w
		}
		for _, ref := range []struct{ field, id, want string }{
			{"input_schema_id", w.InputSchemaID, SchemaInput},
			{"output_schema_id", w.OutputSchemaID, SchemaOutput},
		} {
			if ref.id == "" {
				continue
			}
			switch sc := schemas[ref.id]; {
			case sc == nil:
				report(w, ref.field, "unknown schema %q", ref.id)
			case sc.Type != "" && sc.Type != ref.want:
				report(w, ref.field, "schema %q is an %s schema, not an %s schema", ref.id, sc.Type, ref.want)
			}
		}
	}
	providers := map[string]*Provider{}
	for _, p := range s.Providers {
		if first, dup := providers[p.Provider.ID]; dup {
			report(p, "provider.id", "duplicate provider id %q (also in %s)", p.Provider.ID, where(first, "provider.id"))
		} else {
			providers[p.Provider.ID] = p
		}
		for i, b := range p.Workflows {
			if b.WorkflowID != "" && workflows[b.WorkflowID] == nil {
				report(p, join(index("workflows", i), "workflow_id"), "unknown workflow %q", b.WorkflowID)
			}
		}
	}
	probs.sort()
	return probs.Err()
}

// origin returns the reporter a definition was read with, or a blank one.
func (s *Set) origin(def Definition) *reporter {
	if r, ok := s.origins[def]; ok {
		return &reporter{file: r.file, lines: r.lines, bad: map[string]bool{}}
	}
	return newReporter("")
}

// Load reads every definition below the given paths and validates them as a set. A path may
// be a directory or a file. In a directory every .yaml, .yml and .json file is read, except in
// testdata/ and dot-directories (and dot-files). A file's kind is told by the nearest folder
// named schemas, workflows or providers above it, or else by its content (see Parse).
//
// The error is Problems, listing every problem of every file, sorted by file and line. The
// set is returned even then, holding what could be read; it is only fit for reporting.
func Load(paths ...string) (*Set, error) {
	set := &Set{origins: map[Definition]*reporter{}}
	var probs Problems
	seen := map[string]bool{}
	for _, file := range definitionFiles(paths, &probs) {
		if abs, err := filepath.Abs(file.path); err == nil {
			if seen[abs] {
				continue
			}
			seen[abs] = true
		}
		data, err := readFile(file.path)
		if err != nil {
			probs = append(probs, Problem{File: file.path, Line: 1, Message: pathError(err)})
			continue
		}
		def, r := parse(file.path, data, file.kind)
		probs = append(probs, r.probs...)
		if def == nil || def.DefinitionID() == "" {
			continue
		}
		set.Add(def)
		set.origins[def] = r
	}
	var setProbs Problems
	if err := set.Validate(); err != nil && !errors.As(err, &setProbs) {
		return set, err
	}
	probs = append(probs, setProbs...)
	probs.sort()
	return set, probs.Err()
}

type definitionFile struct {
	path string
	kind Kind // empty: told by content
}

// kindFolders maps the folder names that tell a file's kind.
var kindFolders = map[string]Kind{"schemas": KindSchema, "workflows": KindWorkflow, "providers": KindProvider}

// definitionFiles lists the files to read below paths, in a stable order.
func definitionFiles(paths []string, probs *Problems) []definitionFile {
	var files []definitionFile
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			*probs = append(*probs, Problem{File: root, Line: 1, Message: pathError(err)})
			continue
		}
		if !info.IsDir() {
			files = append(files, definitionFile{path: root, kind: folderKind(filepath.Dir(root), "")})
			continue
		}
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				*probs = append(*probs, Problem{File: path, Line: 1, Message: pathError(err)})
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			name := d.Name()
			if d.IsDir() {
				if path != root && (name == "testdata" || strings.HasPrefix(name, ".")) {
					return fs.SkipDir
				}
				return nil
			}
			switch strings.ToLower(filepath.Ext(name)) {
			case ".yaml", ".yml", ".json":
			default:
				return nil
			}
			if strings.HasPrefix(name, ".") || !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			files = append(files, definitionFile{path: path, kind: folderKind(filepath.Dir(path), root)})
			return nil
		})
		if err != nil {
			*probs = append(*probs, Problem{File: root, Line: 1, Message: err.Error()})
		}
	}
	return files
}

// folderKind returns the kind told by the nearest folder named schemas, workflows or providers
// from dir up to root (root included). With an empty root only dir itself counts.
func folderKind(dir, root string) Kind {
	stop := root
	if stop == "" {
		stop = dir
	}
	for {
		name := filepath.Base(dir)
		if abs, err := filepath.Abs(dir); err == nil {
			name = filepath.Base(abs) // "." and ".." say nothing; the real name does
		}
		if k, ok := kindFolders[name]; ok {
			return k
		}
		parent := filepath.Dir(dir)
		if filepath.Clean(dir) == filepath.Clean(stop) || parent == dir {
			return ""
		}
		dir = parent
	}
}

// readFile reads a file of at most MaxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than the limit of %d bytes", MaxFileSize)
	}
	return data, nil
}

// pathError drops the path from an fs error: the problem names the file already.
func pathError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}
