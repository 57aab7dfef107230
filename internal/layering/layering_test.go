package layering_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/memmie/memmie/"

// deps lists every package the given packages depend on, transitively, with go list.
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-deps", "-json"}, pkgs...)...).Output()
	require.NoError(t, err, "go list -deps %v", pkgs)
	var paths []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct{ ImportPath string }
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		paths = append(paths, p.ImportPath)
	}
	require.NotEmpty(t, paths)
	return paths
}

// under reports whether pkg is prefix or below it.
func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

func TestDependenciesPointOneWay(t *testing.T) {
	pure := []string{"github.com/nats-io", "net/http", "database/sql", "github.com/jackc",
		"github.com/lib/pq", "github.com/ThreeDotsLabs", "os/exec"}
	for _, tc := range []struct {
		name      string
		pkgs      []string
		allowOwn  []string // memmie packages (prefixes) that may appear below pkgs
		forbidden []string // other packages that must not
	}{
		{
			name:      "events is the vocabulary",
			pkgs:      []string{module + "events"},
			allowOwn:  []string{module + "events"},
			forbidden: []string{"github.com/nats-io", "net/http"},
		},
		{
			// The stream configs are nats.go types; still nothing of memmie but events.
			name:      "events/streams knows only events",
			pkgs:      []string{module + "events/..."},
			allowOwn:  []string{module + "events"},
			forbidden: []string{"database/sql", "github.com/jackc"},
		},
		{
			name:      "definitions import events at most",
			pkgs:      []string{module + "definitions/..."},
			allowOwn:  []string{module + "events", module + "definitions"},
			forbidden: []string{"github.com/nats-io", "net/http"},
		},
		{
			name:     "the cores are pure",
			pkgs:     []string{module + "internal/core/..."},
			allowOwn: []string{module + "internal/core", module + "events", module + "definitions"},
			// database/sql/driver stays allowed: google/uuid implements its interfaces.
			forbidden: pure,
		},
		{
			name:     "the log buffer of tests knows nothing of memmie",
			pkgs:     []string{module + "internal/logbuf"},
			allowOwn: []string{module + "internal/logbuf"},
		},
		{
			name:     "the lifecycle helper knows nothing of memmie",
			pkgs:     []string{module + "internal/lifecycle"},
			allowOwn: []string{module + "internal/lifecycle"},
		},
		{
			name: "JetStream plumbing knows no handler, core or composition root",
			pkgs: []string{module + "internal/jetstream/...", module + "internal/faults"},
			allowOwn: []string{module + "internal/jetstream", module + "internal/faults", module + "internal/lifecycle",
				module + "events", module + "definitions"},
		},
		{
			name: "handlers use the vocabulary, the cores and the plumbing, and never each other",
			pkgs: []string{module + "handlers/..."},
			allowOwn: []string{module + "handlers", module + "events", module + "definitions", module + "internal/core",
				module + "internal/jetstream", module + "internal/faults", module + "internal/services",
				module + "internal/lifecycle", module + "internal/tracing"},
		},
		{
			name:     "the tracing helper knows nothing of memmie",
			pkgs:     []string{module + "internal/tracing"},
			allowOwn: []string{module + "internal/tracing"},
		},
		{
			// The schema and the local Postgres serve every layer above them.
			name: "migrations and the local Postgres know nothing of memmie's handlers, cores or engine",
			pkgs: []string{module + "migrations/...", module + "internal/pglocal/...", module + "internal/pgtest/..."},
			allowOwn: []string{module + "migrations", module + "internal/pglocal", module + "internal/pgtest",
				module + "internal/childproc"},
		},
		{
			// Projections fold the streams into Postgres beside the handlers, never through them.
			name: "projections know neither handlers nor the composition root",
			pkgs: []string{module + "projections/..."},
			allowOwn: []string{module + "projections", module + "events", module + "definitions", module + "internal/core",
				module + "internal/jetstream", module + "internal/faults", module + "internal/lifecycle"},
			forbidden: []string{module + "handlers", module + "internal/app", module + "cmd"},
		},
		{
			name:      "the composition root is above the handlers and below the CLI",
			pkgs:      []string{module + "internal/app/..."},
			forbidden: []string{module + "cmd"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range deps(t, tc.pkgs...) {
				for _, f := range tc.forbidden {
					if under(p, f) && p != "database/sql/driver" {
						t.Errorf("%v depends on %s", tc.pkgs, p)
					}
				}
				if tc.allowOwn != nil && strings.HasPrefix(p, module) &&
					!slices.ContainsFunc(tc.allowOwn, func(a string) bool { return under(p, a) }) {
					t.Errorf("%v depends on %s", tc.pkgs, p)
				}
			}
		})
	}
}

// TestHandlersDoNotImportEachOther: each handler stands alone; what two handlers share lives
// in the plumbing (internal/jetstream) or the cores.
func TestHandlersDoNotImportEachOther(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"handlers/...").Output()
	require.NoError(t, err)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		self := fields[0]
		for _, imp := range fields[1:] {
			if under(imp, module+"handlers") && !under(imp, self) && !under(self, imp) {
				t.Errorf("%s imports %s", self, imp)
			}
		}
	}
}

// TestFoldersShowTheirLayer: handlers/ holds only handlers, so plumbing cannot creep back.
func TestFoldersShowTheirLayer(t *testing.T) {
	out, err := exec.Command("go", "list", module+"handlers/...").Output()
	require.NoError(t, err)
	handlers := []string{"orchestrator", "runner", "timers", "dispatcher", "reconciler", "blobs", "triggers", "deltas"}
	for _, p := range strings.Fields(string(out)) {
		name := strings.TrimPrefix(p, module+"handlers/")
		name, _, _ = strings.Cut(name, "/")
		if !slices.Contains(handlers, name) {
			t.Errorf("%s is under handlers/ but is not a handler (plumbing goes to internal/jetstream, cores to internal/core)", p)
		}
	}
}
