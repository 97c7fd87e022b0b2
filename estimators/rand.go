package estimators

import (
	"math"
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
	// Bit i of each draw is entry i's sign, set into the bits of 1.0
	// without a branch: bit 1 gives +1, bit 0 gives −1.
	const one = 0x3ff0000000000000
	for i := 0; i < len(dst); i += 64 {
		bits := r.Uint64()
		blk := dst[i:min(i+64, len(dst))]
		for j := range blk {
			blk[j] = math.Float64frombits(one | (^bits&1)<<63)
			bits >>= 1
		}
	}
}

// gaussian fills dst with standard normal entries from r.
func gaussian(dst []float64, r *rand.Rand) {
	for i := range dst {
		dst[i] = r.NormFloat64()
	}
}
