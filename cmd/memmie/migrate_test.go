package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/pgtest"
)

func TestMigrate(t *testing.T) {
	url := pgtest.EmptyURL(t)
	code, out, errOut := executeSplit(t, "migrate", "--database-url", url)
	require.Equal(t, 0, code, errOut)
	// Each file, in order, whatever comes after the first, with its time to the millisecond
	// ("0s" for an ALTER that takes less).
	require.Regexp(t, `^applied 00001_projections\.sql \(\d+ms\)\n(applied \d{5}_\w+\.sql \((0s|\d+ms|\d+(\.\d+)?s)\)\n)*$`, out)

	t.Setenv("MEMMIE_DATABASE_URL", url)
	code, out, errOut = executeSplit(t, "migrate")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "up to date: no migration to apply\n", out)
}

func TestMigrateNeedsADatabase(t *testing.T) {
	code, _, errOut := executeSplit(t, "migrate")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--database-url (or MEMMIE_DATABASE_URL) is required")

	code, _, errOut = executeSplit(t, "migrate", "--database-url", "postgres://nobody@127.0.0.1:1/x?connect_timeout=5")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "migrate: connect to --database-url")
}
