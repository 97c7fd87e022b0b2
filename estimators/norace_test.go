//go:build !race

package estimators

const raceEnabled = false
