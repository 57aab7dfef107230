package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRemoveAbandonedKeepsLiveOwners(t *testing.T) {
	gone := exec.Command("true")
	require.NoError(t, gone.Run()) // its pid is free now (and reaped)
	dead, err := os.MkdirTemp("", "memmie-pgtest-")
	require.NoError(t, err)
	live, err := os.MkdirTemp("", "memmie-pgtest-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dead); _ = os.RemoveAll(live) })
	require.NoError(t, os.WriteFile(filepath.Join(dead, ownerFile), []byte(strconv.Itoa(gone.Process.Pid)), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(live, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600))

	removeAbandoned()
	require.NoDirExists(t, dead)
	require.DirExists(t, live)
}

func TestConfigFromURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string // pgtestdb's URL of the same server
	}{
		{"postgres://u:p@db.example:6543/app?sslmode=disable", "postgres://u:p@db.example:6543/app?sslmode=disable"},
		{"postgresql://u@localhost", "postgres://u:@localhost:5432/postgres?"},
		{"postgres://u@[::1]:5433/x", "postgres://u:@[::1]:5433/x?"},
		{"postgres://postgres@/postgres?host=%2Ftmp%2Fpg&port=5432", "postgres://postgres:@:/postgres?host=%2Ftmp%2Fpg&port=5432"},
	} {
		conf, err := config(tc.url)
		require.NoError(t, err, tc.url)
		require.Equal(t, tc.want, conf.URL(), tc.url)
	}
	_, err := config("host=localhost user=u")
	require.ErrorContains(t, err, EnvURL)
}
