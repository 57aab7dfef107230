package childproc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/memmie/memmie/internal/childproc"
)

// parentEnv makes the test binary a parent that starts `sleep` with Command, prints the
// child's pid and waits to be killed.
const parentEnv = "CHILDPROC_TEST_PARENT"

func TestMain(m *testing.M) {
	if os.Getenv(parentEnv) != "" {
		child := childproc.Command(context.Background(), "sleep", "300")
		if err := child.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(child.Process.Pid)
		select {}
	}
	os.Exit(m.Run())
}

// TestChildDiesWithItsKilledParent kills the parent with SIGKILL and expects its child to be
// gone: no process, or a zombie waiting for whoever adopted it to reap it.
func TestChildDiesWithItsKilledParent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig is Linux only")
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"=1")
	parent.SysProcAttr = childproc.DieWithParent() // if this test dies, so does the parent
	stdout, err := parent.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, parent.Start())
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err, line)
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	require.True(t, alive(child), "the child runs while its parent does")

	require.NoError(t, parent.Process.Kill())
	_ = parent.Wait()

	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for alive(child) {
		require.True(t, time.Now().Before(deadline), "child %d still runs 5s after its parent was killed", child)
		<-tick.C
	}
}

func TestDieWithParent(t *testing.T) {
	a, b := childproc.DieWithParent(), childproc.DieWithParent()
	if runtime.GOOS != "linux" {
		require.Nil(t, a)
		return
	}
	require.Equal(t, syscall.SIGKILL, a.Pdeathsig)
	require.NotSame(t, a, b, "a fresh value each call")
	require.Equal(t, syscall.SIGKILL, childproc.Command(context.Background(), "true").SysProcAttr.Pdeathsig)
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
