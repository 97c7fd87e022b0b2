//go:build race

package main

// raceEnabled: the race detector slows the conv nets ~10×; the
// determinism test, which reruns the study, is left to normal runs.
const raceEnabled = true
