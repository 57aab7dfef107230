package pglocal

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runAs returns the credential initdb and postgres run with: nil (this process's user), or
// the postgres OS user when this process is root, since both refuse to run as root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the postgres OS user, and there is none (%w): "+
			"install PostgreSQL from the system's packages, which creates it, or run memmie as another user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user postgres: uid %q gid %q are not numbers", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// setOwner makes cmd run as owner. The credential is set in the child itself, rather than
// through runuser, so that postgres stays this process's child and keeps its Pdeathsig.
func setOwner(cmd *exec.Cmd, owner *syscall.Credential) {
	if owner == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = owner
}

// prepareDir creates dir (0700) and, when the server runs as another user, gives it to that
// user if it is empty and checks that the user can reach it.
func prepareDir(dir string, owner *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if owner == nil {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		if err := os.Chown(dir, int(owner.Uid), int(owner.Gid)); err != nil {
			return fmt.Errorf("give %s to the postgres user: %w", dir, err)
		}
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !searchable(fi, owner) {
			return fmt.Errorf("%w: the postgres user, as which PostgreSQL runs when memmie is root, cannot reach %s: "+
				"%s (mode %v) is not searchable by it; chmod o+x it, or choose a folder elsewhere", ErrUnreachable, dir, p,
				fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// searchable reports whether the user of cred may enter the folder fi (supplementary groups
// aside).
func searchable(fi fs.FileInfo, cred *syscall.Credential) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == cred.Uid:
		return perm&0o100 != 0
	case st.Gid == cred.Gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// removeStaleLocks removes the lock files a killed server left (postmaster.pid in the data
// folder, .s.PGSQL.<port>.lock in the socket folder) when the process they name is provably
// not a running postgres: gone, or on Linux a zombie or a process of another program that got
// its pid. postgres
// would remove a lock whose process is gone by itself, but it takes any live process for
// its owner and refuses to start, and after a restart pids are soon reused. A lock of a live
// postgres is left for postgres to judge.
func removeStaleLocks(dataDir, socketDir string, port int) error {
	const lockWait = 5 * time.Second
	for _, lock := range []string{
		filepath.Join(dataDir, "postmaster.pid"),
		filepath.Join(socketDir, ".s.PGSQL."+strconv.Itoa(port)+".lock"),
	} {
		pid, err := lockPID(lock)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", lock, err)
		}
		// A server whose starter was killed dies with it (internal/childproc), but not
		// at once: give it a moment before judging its lock.
		for deadline := time.Now().Add(lockWait); maybePostgres(pid) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if !maybePostgres(pid) {
			if err := os.Remove(lock); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale %s: %w", lock, err)
			}
		}
	}
	return nil
}

// lockPID reads the pid on the first line of a PostgreSQL lock file (negative for a
// single-user backend's postmaster.pid), or 0 when the line is not a number.
func lockPID(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	pid, _ := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if pid < 0 {
		pid = -pid
	}
	return pid, sc.Err()
}

// maybePostgres reports whether pid may be a running postgres process.
func maybePostgres(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	// "pid (comm) state ...": a zombie is a dead process its parent has not reaped yet, as
	// a killed server is until whoever adopted it waits for it.
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true // not Linux, or not ours to read: assume the worst
	}
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return true
	}
	return s[end+2] != 'Z' && s[open+1:end] == "postgres"
}
