//go:build race

package estimators

// raceEnabled shrinks the statistical tests under the race detector, which
// slows the pure-Go BLAS by an order of magnitude.
const raceEnabled = true
