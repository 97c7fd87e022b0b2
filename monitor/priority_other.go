//go:build !linux

package monitor

// lowerPriority is a no-op where the nice value is not per thread.
func lowerPriority(int) {}
