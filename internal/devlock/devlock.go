package devlock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// FileName is the lock file's name inside the directory.
const FileName = "memmie.lock"

// ErrHeld is matched (errors.Is) by the error of Acquire when another process holds the lock.
var ErrHeld = errors.New("locked by another process")

// HeldError is the error of Acquire when another process holds the lock.
type HeldError struct {
	// Path is the lock file.
	Path string
	// PID is the holder's pid, as its lock file says; 0 when the holder has not written it yet.
	PID int
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s is %s", e.Path, ErrHeld)
	}
	return fmt.Sprintf("%s is %s (pid %d)", e.Path, ErrHeld, e.PID)
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is a held lock on a directory.
type Lock struct {
	// Path is the lock file.
	Path string
	// Previous is the pid the lock file held when the lock was taken: the pid of a holder that
	// did not release it (it was killed or crashed), or 0 when the last holder released it or
	// there was none.
	Previous int
	f        *os.File
}

// Acquire creates dir if needed and takes its lock without waiting. It returns a *HeldError
// when another process holds it.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	held, err := tryLock(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if held {
		pid, _ := readPID(f)
		_ = f.Close()
		return nil, &HeldError{Path: path, PID: pid}
	}
	prev, _ := readPID(f)
	if err := writePID(f, os.Getpid()); err != nil {
		_ = unlock(f)
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{Path: path, Previous: prev, f: f}, nil
}

// Release empties the lock file, so that the next holder finds no stale pid, and releases
// the lock. It is safe to call twice.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	err := f.Truncate(0)
	if uerr := unlock(f); err == nil {
		err = uerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", l.Path, err)
	}
	return nil
}

// ReadPID returns the pid the lock file in dir holds, or 0 when it holds none or does not
// exist. It takes no lock: the answer may be stale as soon as it is returned.
func ReadPID(dir string) (int, error) {
	f, err := os.Open(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return readPID(f)
}

func readPID(f *os.File) (int, error) {
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if n == 0 {
		return 0, err
	}
	s := string(bytes.TrimSpace(buf[:n]))
	if s == "" {
		return 0, nil
	}
	pid, perr := strconv.Atoi(s)
	if perr != nil || pid <= 0 {
		return 0, fmt.Errorf("lock file %s holds %q, not a pid", f.Name(), s)
	}
	return pid, nil
}

func writePID(f *os.File, pid int) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0); err != nil {
		return err
	}
	return nil
}
