package devlock_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/devlock"
)

// helperEnv makes the test binary a process that takes the lock of the directory it names,
// prints "locked" and waits to be killed.
const helperEnv = "DEVLOCK_TEST_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		if _, err := devlock.Acquire(dir); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("locked")
		select {}
	}
	os.Exit(m.Run())
}

func TestAcquireWritesThePID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "dir")
	l, err := devlock.Acquire(dir)
	require.NoError(t, err)
	defer l.Release()
	assert.Equal(t, filepath.Join(dir, devlock.FileName), l.Path)
	assert.Zero(t, l.Previous)
	b, err := os.ReadFile(l.Path)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(os.Getpid())+"\n", string(b))
}

func TestSecondAcquireFailsWithTheHoldersPID(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	l, err := devlock.Acquire(dir)
	require.NoError(t, err)

	// flock excludes open file descriptions, so a second Acquire in the same process is refused
	// just as another process's is.
	_, err = devlock.Acquire(dir)
	var held *devlock.HeldError
	require.ErrorAs(t, err, &held)
	assert.ErrorIs(t, err, devlock.ErrHeld)
	assert.Equal(t, os.Getpid(), held.PID)
	assert.Contains(t, err.Error(), fmt.Sprintf("(pid %d)", os.Getpid()))

	require.NoError(t, l.Release())
	require.NoError(t, l.Release(), "a second release is a no-op")
	again, err := devlock.Acquire(dir)
	require.NoError(t, err, "released")
	assert.Zero(t, again.Previous, "a released lock leaves no pid behind")
	require.NoError(t, again.Release())
}

func TestAcquireReportsTheContentsItFinds(t *testing.T) {
	tests := []struct {
		name     string
		contents string
		previous int
	}{
		{"stale pid", "4242\n", 4242},
		{"empty", "", 0},
		{"garbage", "not a pid", 0},
		{"negative", "-3", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, devlock.FileName), []byte(tt.contents), 0o644))
			l, err := devlock.Acquire(dir)
			require.NoError(t, err)
			defer l.Release()
			assert.Equal(t, tt.previous, l.Previous)
			pid, err := devlock.ReadPID(dir)
			require.NoError(t, err)
			assert.Equal(t, os.Getpid(), pid, "the new holder's pid replaces what was there")
		})
	}
}

// TestKilledHolderReleasesTheLock runs a holder in another process: while it lives, Acquire
// names it; after kill -9 the kernel has released its flock, and Acquire takes the lock and
// reports the dead holder's pid as Previous.
func TestKilledHolderReleasesTheLock(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked", strings.TrimSpace(line))

	_, err = devlock.Acquire(dir)
	var held *devlock.HeldError
	require.ErrorAs(t, err, &held)
	assert.Equal(t, cmd.Process.Pid, held.PID)

	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no chance to release
	_ = cmd.Wait()

	l, err := devlock.Acquire(dir)
	require.NoError(t, err)
	defer l.Release()
	assert.Equal(t, cmd.Process.Pid, l.Previous)
}

func TestReadPIDWithoutLockFile(t *testing.T) {
	pid, err := devlock.ReadPID(t.TempDir())
	require.NoError(t, err)
	assert.Zero(t, pid)
}

func TestAcquireFailsOnAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err := devlock.Acquire(file)
	require.Error(t, err)
	assert.False(t, errors.Is(err, devlock.ErrHeld))
}

func requireFlock(t *testing.T) {
	switch runtime.GOOS {
	case "linux", "darwin", "freebsd", "netbsd", "openbsd", "dragonfly":
	default:
		t.Skipf("no flock on %s", runtime.GOOS)
	}
}
