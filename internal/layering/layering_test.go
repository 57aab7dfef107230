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
	for _, tc := range []struct {
		name      string
		pkgs      []string
		allowOwn  []string // memmie packages that may appear below pkgs
		forbidden []string // other packages that must not
	}{
		{
			name:      "events is the vocabulary",
			pkgs:      []string{module + "events"},
			allowOwn:  []string{module + "events"},
			forbidden: []string{"github.com/nats-io", "net/http"},
		},
		{
			name:      "definitions import events at most",
			pkgs:      []string{module + "definitions", module + "definitions/eval"},
			allowOwn:  []string{module + "events", module + "definitions", module + "definitions/eval"},
			forbidden: []string{"github.com/nats-io", "net/http"},
		},
		{
			name:     "the core is pure",
			pkgs:     []string{module + "internal/execution"},
			allowOwn: []string{module + "internal/execution", module + "events", module + "definitions", module + "definitions/eval"},
			// database/sql/driver stays allowed: google/uuid implements its interfaces.
			forbidden: []string{"github.com/nats-io", "net/http", "database/sql", "github.com/jackc",
				"github.com/lib/pq", "github.com/ThreeDotsLabs", "os/exec"},
		},
		{
			name:      "handlers know neither the API, the registry nor the CLI",
			pkgs:      []string{module + "handlers/..."},
			forbidden: []string{module + "internal/api", module + "internal/registry", module + "cmd"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range deps(t, tc.pkgs...) {
				for _, f := range tc.forbidden {
					if under(p, f) && p != "database/sql/driver" {
						t.Errorf("%v depends on %s", tc.pkgs, p)
					}
				}
				if tc.allowOwn != nil && strings.HasPrefix(p, module) && !slices.Contains(tc.allowOwn, p) {
					t.Errorf("%v depends on %s", tc.pkgs, p)
				}
			}
		})
	}
}
