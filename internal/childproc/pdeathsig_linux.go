package childproc

import "syscall"

// DieWithParent returns the process attributes that make the kernel SIGKILL a child when its
// parent dies. It is a new value on every call, for exec.Cmd.SysProcAttr.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
