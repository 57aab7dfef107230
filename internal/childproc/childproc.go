package childproc

import (
	"context"
	"os/exec"
)

// Command is exec.CommandContext with the child set to die with this process (see
// DieWithParent).
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = DieWithParent()
	return cmd
}
