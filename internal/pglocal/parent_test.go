package pglocal_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/childproc"
	"github.com/memmie/memmie/internal/pglocal"
)

// parentEnv makes the test binary a parent that starts a cluster in the folder it names,
// prints the postmaster's pid and waits to be killed.
const parentEnv = "PGLOCAL_TEST_PARENT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(parentEnv); dir != "" {
		srv, err := pglocal.Start(context.Background(), pglocal.Config{DataDir: dir, NoSync: true})
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		_ = srv
		fmt.Println(postmasterPID(dir))
		select {}
	}
	os.Exit(m.Run())
}

func postmasterPID(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return pid
}

// TestServerDiesWithItsKilledParent kills the process that started the server with SIGKILL,
// as a kill -9 of memmie dev does: the server must not outlive it (also when it runs as the
// postgres user), and the next start on the same data succeeds.
func TestServerDiesWithItsKilledParent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig is Linux only")
	}
	dir := dataDir(t)
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"="+dir)
	parent.SysProcAttr = childproc.DieWithParent() // if this test dies, so does the parent
	stdout, err := parent.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, parent.Start())
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	postmaster, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err, line)
	t.Cleanup(func() { _ = syscall.Kill(postmaster, syscall.SIGKILL) })
	require.NoError(t, syscall.Kill(postmaster, 0), "the server runs while its parent does")

	require.NoError(t, parent.Process.Kill())
	_ = parent.Wait()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for alive(postmaster) {
		require.True(t, time.Now().Before(deadline), "postgres %d still runs 30s after its parent was killed", postmaster)
		<-tick.C
	}

	srv := start(t, pglocal.Config{DataDir: dir})
	var one int
	require.NoError(t, connect(t, srv).QueryRow(context.Background(), "SELECT 1").Scan(&one))
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return err != nil || i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
