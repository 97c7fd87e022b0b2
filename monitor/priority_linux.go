package monitor

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// lowerPriority pins the calling goroutine to its OS thread and sets that
// thread's nice value (on Linux the nice value is per thread). The thread
// is never unlocked: when the probe's goroutine returns, the runtime ends
// the thread instead of reusing it at low priority. Probes run at normal
// priority by default (the budget paces them); a nice value is a
// benchmark knob (probeknobs.Knobs.ProbeNice) to measure that choice.
func lowerPriority(nice int) {
	if nice <= 0 {
		return
	}
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice) // best effort: a failure only costs priority
}
