//go:build !linux

package childproc

import "syscall"

// DieWithParent returns nil: only Linux has a parent-death signal.
func DieWithParent() *syscall.SysProcAttr { return nil }
