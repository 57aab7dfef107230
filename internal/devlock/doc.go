// Package devlock makes a data directory belong to one process at a time: `memmie dev` takes
// the lock before it opens the embedded server's store, so that a second dev on the same
// directory fails at once instead of opening the same files.
//
//	l, err := devlock.Acquire(dataDir)
//	var held *devlock.HeldError
//	if errors.As(err, &held) {
//		// another process (held.PID) has the directory
//	}
//	defer l.Release()
//	if l.Previous != 0 {
//		// the last holder (pid l.Previous) did not release it: it was killed or crashed
//	}
//
// The lock is an flock(2) on <dir>/memmie.lock, which holds the holder's pid. The kernel
// releases an flock when its process dies, however it dies (kill -9 included), so a stale file
// never blocks a start: the next holder takes the lock and overwrites the pid. The file is
// never removed, since removing a lock file lets two processes lock two different files.
//
// On systems without flock (Windows, Solaris) Acquire records the pid but excludes nobody.
// The package never touches anything in the directory but its lock file.
package devlock
