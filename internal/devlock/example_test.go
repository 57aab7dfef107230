package devlock_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/memmie/memmie/internal/devlock"
)

func ExampleAcquire() {
	dir, _ := os.MkdirTemp("", "memmie")
	defer os.RemoveAll(dir)

	l, err := devlock.Acquire(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Release()

	_, err = devlock.Acquire(dir) // as a second memmie dev would
	var held *devlock.HeldError
	fmt.Println(errors.As(err, &held), held.PID == os.Getpid())
	// Output: true true
}
