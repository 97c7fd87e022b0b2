//go:build race

package store

// raceEnabled shrinks the tests that push gigabytes through bbolt, whose
// page copies the race detector slows by an order of magnitude.
const raceEnabled = true
