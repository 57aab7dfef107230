// Package childproc starts the processes memmie runs beside itself (a local PostgreSQL:
// internal/pglocal) so that they die with it, even when it is killed with SIGKILL and has no
// chance to stop them.
//
//	cmd := childproc.Command(ctx, "postgres", "-D", dir)
//	err := cmd.Start()
//
// On Linux the child gets Pdeathsig SIGKILL: the kernel kills it when the thread that started
// it exits, which for a Go program means when the program exits (the runtime does not end its
// threads, except one locked with runtime.LockOSThread whose goroutine returns; do not start a
// child from such a goroutine). Elsewhere there is no such signal, and a killed parent leaves
// its children running.
package childproc
