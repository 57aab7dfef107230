package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resolvePassword parses args and env as serve would and resolves the password.
func resolvePassword(t *testing.T, args []string, env map[string]string) (password, logs string, err error) {
	t.Helper()
	var o runtimeOptions
	cmd := &cobra.Command{Use: "x"}
	o.addFlags(cmd.Flags(), "", "info")
	require.NoError(t, cmd.ParseFlags(args))
	require.NoError(t, applyEnv(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	var buf bytes.Buffer
	err = o.resolveSecrets(cmd.Flags(), slog.New(slog.NewTextHandler(&buf, nil)))
	return o.natsPassword, buf.String(), err
}

func TestNATSPasswordSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "password")
	require.NoError(t, os.WriteFile(file, []byte("s3cret\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))

	t.Run("a file, its final newline dropped", func(t *testing.T) {
		pw, logs, err := resolvePassword(t, []string{"--nats-password-file", file}, nil)
		require.NoError(t, err)
		assert.Equal(t, "s3cret", pw)
		assert.Empty(t, logs)
	})
	t.Run("the file through the environment", func(t *testing.T) {
		pw, _, err := resolvePassword(t, nil, map[string]string{"MEMMIE_NATS_PASSWORD_FILE": file})
		require.NoError(t, err)
		assert.Equal(t, "s3cret", pw)
	})
	t.Run("the environment, without a warning", func(t *testing.T) {
		pw, logs, err := resolvePassword(t, nil, map[string]string{"MEMMIE_NATS_PASSWORD": "from-env"})
		require.NoError(t, err)
		assert.Equal(t, "from-env", pw)
		assert.Empty(t, logs)
	})
	t.Run("the command line works, with a warning", func(t *testing.T) {
		pw, logs, err := resolvePassword(t, []string{"--nats-password", "on-the-line"}, nil)
		require.NoError(t, err)
		assert.Equal(t, "on-the-line", pw)
		assert.Contains(t, logs, "level=WARN")
		assert.Contains(t, logs, "--nats-password-file or MEMMIE_NATS_PASSWORD")
		assert.NotContains(t, logs, "on-the-line", "the warning does not repeat the password")
	})
	for name, args := range map[string][]string{
		"both":         {"--nats-password", "x", "--nats-password-file", file},
		"missing file": {"--nats-password-file", filepath.Join(dir, "nope")},
		"empty file":   {"--nats-password-file", empty},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := resolvePassword(t, args, nil)
			assert.ErrorContains(t, err, "--nats-password")
		})
	}
}
