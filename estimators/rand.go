package estimators

import (
	"math/rand/v2"
)

// mix64 is the splitmix64 finaliser; it turns nearby (seed, id) pairs into
// unrelated PCG states so that probe streams are independent.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// stream returns the deterministic random stream number id under seed.
func stream(seed, id uint64) *rand.Rand {
	a := mix64(seed ^ mix64(id))
	b := mix64(a ^ 0x5851f42d4c957f2d ^ id)
	return rand.New(rand.NewPCG(a, b))
}

// Stream identifiers keep the estimators' random draws apart even when
// callers reuse one seed for all of them.
const (
	streamEigen  uint64 = 1 << 62
	streamPower  uint64 = 2 << 62
	streamSketch uint64 = 3 << 62
)

// rademacher fills dst with independent ±1 entries drawn from stream
// (seed, id). The same (seed, id) always gives the same vector, which is how
// trace tracking and the ESD regenerate old probes without storing them.
func rademacher(dst []float64, seed, id uint64) {
	r := stream(seed, id)
	var bits uint64
	for i := range dst {
		if i&63 == 0 {
			bits = r.Uint64()
		}
		if bits&1 == 1 {
			dst[i] = 1
		} else {
			dst[i] = -1
		}
		bits >>= 1
	}
}

// gaussian fills dst with standard normal entries from r.
func gaussian(dst []float64, r *rand.Rand) {
	for i := range dst {
		dst[i] = r.NormFloat64()
	}
}
