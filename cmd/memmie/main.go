// Command memmie is the memmie workflow engine: one binary for the laptop (dev), production
// (serve) and the tools around them (validate, apply, run, ...). See the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI and returns the process exit code. A first SIGINT/SIGTERM cancels the
// context so that long-running commands stop cleanly; a second one forces the exit.
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore default handling: the next signal kills the process
	}()

	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		return ee.code
	default:
		fmt.Fprintln(os.Stderr, "memmie:", err)
		return 1
	}
}

// exitError carries a specific exit code out of a command (the contract gives some commands
// meaningful codes, e.g. run --wait).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }
