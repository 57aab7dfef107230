package events_test

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

// The vocabulary imports nothing of memmie and no NATS code; only events/streams knows NATS.
func TestEventsImportNothingOfOurs(t *testing.T) {
	for _, p := range deps(t, "github.com/memmie/memmie/events") {
		if strings.HasPrefix(p, "github.com/memmie/memmie/") && p != "github.com/memmie/memmie/events" {
			t.Errorf("events depends on %s", p)
		}
		if strings.HasPrefix(p, "github.com/nats-io/") || p == "net/http" {
			t.Errorf("events depends on %s", p)
		}
	}
}
