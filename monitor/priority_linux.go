package monitor

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// lowerPriority pins the calling goroutine to its OS thread and lowers that
// thread's scheduling priority (nice 19; on Linux the nice value is per
// thread), so that on a machine with more runnable threads than cores the
// training loop keeps the CPU and the probe takes what is left. The thread
// is never unlocked: when the probe's goroutine returns, the runtime ends
// the thread instead of reusing it at low priority.
func lowerPriority() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19) // best effort: a failure only costs priority
}
