package monitor

import (
	"math"

	"github.com/hessmon/hessmon/snapshot"
)

// The trigger rules. A light probe compares what it sees with the last full
// probe; a rule that holds brings a full probe forward to the next due step
// (over budget for that one probe), which then becomes the new reference.
// Each rule has hysteresis, so that a state that persists fires once, not
// at every due step:
//   - threshold: the sharpness ratio's band (below 0.8, 0.8 to 1, above 1)
//     differs from the reference's; leaving a band downwards needs the
//     ratio 5% below its edge.
//   - jump: λ1 is more than 25% away from the reference's λ1. The full
//     probe resets the reference, so a steady drift fires once per 25%.
//   - negative curvature: |λmin|/λ1 > 0.1 (λmin < 0) while armed; firing
//     disarms it, and it re-arms only once a probe sees the ratio below
//     0.05.
//   - failure: a light probe failed (NaN, Inf, error); it fires once per
//     run of failures and re-arms at the next good probe.
const (
	jumpRel      = 0.25
	negCurvRatio = 0.1
	negCurvRearm = 0.05
	bandSlack    = 0.05
)

// triggers is the state of the trigger rules.
type triggers struct {
	off bool

	haveRef  bool
	refL1    float64 // λ1 of the last full probe
	refBand  int     // its sharpness band (0, 1, 2), -1 without a threshold
	negArmed bool
	failArm  bool

	next snapshot.Reason // the trigger waiting for a due step ("" none)
}

func newTriggers(cfg Config) triggers {
	return triggers{off: cfg.NoTriggers || cfg.LightOnly, negArmed: true, failArm: true, refBand: -1}
}

// band is the sharpness band of ratio r, with hysteresis around prev: a
// ratio leaves a band downwards only when bandSlack below its edge.
func band(r float64, prev int) int {
	b := 0
	switch {
	case r >= 1:
		b = 2
	case r >= 0.8:
		b = 1
	}
	if prev > b {
		edge := [...]float64{0, 0.8, 1}[prev]
		if r >= edge*(1-bandSlack) {
			return prev
		}
	}
	return b
}

// pending returns the waiting trigger.
func (t *triggers) pending() (snapshot.Reason, bool) { return t.next, t.next != "" }

// fire consumes the waiting trigger.
func (t *triggers) fire() { t.next = "" }

// full makes the full probe s the reference.
func (t *triggers) full(s *snapshot.Snapshot) {
	if s.Failed() {
		return
	}
	l1, ok := s.Lambda1()
	if !ok {
		return
	}
	t.haveRef, t.refL1 = true, l1
	t.refBand = -1
	if s.SharpnessThreshold > 0 {
		t.refBand = band(s.SharpnessRatio, 0)
	}
	t.negRule(s)
	t.failArm = true
	t.next = ""
}

// light checks the light probe s against the reference and, when a rule
// holds, leaves a trigger waiting for the next due step.
func (t *triggers) light(s *snapshot.Snapshot) {
	if t.off || t.next != "" {
		return
	}
	if s.Failed() {
		if t.failArm {
			t.failArm = false
			t.next = snapshot.ReasonFailure
		}
		return
	}
	t.failArm = true
	l1, ok := s.Lambda1()
	if !ok {
		return
	}
	switch {
	case t.haveRef && t.refBand >= 0 && s.SharpnessThreshold > 0 && band(s.SharpnessRatio, t.refBand) != t.refBand:
		t.next = snapshot.ReasonThreshold
	case t.negRule(s):
		t.next = snapshot.ReasonNegativeCurvature
	case t.haveRef && math.Abs(l1-t.refL1) > jumpRel*math.Abs(t.refL1):
		t.next = snapshot.ReasonJump
	}
}

// negRule applies the negative-curvature rule's hysteresis to s and
// reports whether it fires.
func (t *triggers) negRule(s *snapshot.Snapshot) bool {
	l1, ok := s.Lambda1()
	if !ok || s.LambdaMin == nil || !(l1 > 0) {
		return false
	}
	ratio := 0.0
	if s.LambdaMin.Value < 0 {
		ratio = -s.LambdaMin.Value / l1
	}
	switch {
	case ratio < negCurvRearm:
		t.negArmed = true
	case ratio > negCurvRatio && t.negArmed:
		t.negArmed = false
		return true
	}
	return false
}
