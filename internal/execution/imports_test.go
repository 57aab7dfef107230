package execution_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// deps lists every package pkg depends on, transitively, with go list.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json", pkg).Output()
	require.NoError(t, err, "go list")
	var paths []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct{ ImportPath string }
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		paths = append(paths, p.ImportPath)
	}
	require.NotEmpty(t, paths)
	return paths
}

// The core is pure: no NATS, HTTP or Postgres code anywhere below it, and of memmie only the
// vocabulary and the definitions.
func TestCoreImportsNoIO(t *testing.T) {
	forbidden := []string{
		"github.com/nats-io",
		"net/http",
		"database/sql", // database/sql/driver is allowed: google/uuid implements its interfaces
		"github.com/jackc",
		"github.com/lib/pq",
		"github.com/ThreeDotsLabs",
		"os/exec",
	}
	allowedOwn := map[string]bool{
		"github.com/memmie/memmie/internal/execution": true,
		"github.com/memmie/memmie/events":             true,
		"github.com/memmie/memmie/definitions":        true,
		"github.com/memmie/memmie/definitions/eval":   true,
	}
	for _, p := range deps(t, "github.com/memmie/memmie/internal/execution") {
		for _, f := range forbidden {
			f = strings.TrimSuffix(f, "/")
			if (p == f || strings.HasPrefix(p, f+"/")) && p != "database/sql/driver" {
				t.Errorf("the core depends on %s", p)
			}
		}
		if strings.HasPrefix(p, "github.com/memmie/memmie/") && !allowedOwn[p] {
			t.Errorf("the core depends on %s", p)
		}
	}
}
