//go:build !race

package rtblas

const raceEnabled = false
