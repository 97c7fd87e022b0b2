package storebench

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync is what bbolt calls on Linux to commit.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
