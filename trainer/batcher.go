package trainer

import (
	"math/rand/v2"

	"github.com/hessmon/hessmon/data"
)

// BatchOf copies the samples idx of d into a new batch.
func BatchOf(d *data.Dataset, idx []int) Batch {
	x, labels := d.Gather(idx)
	return Batch{X: &Tensor{N: len(idx), Shape: d.Shape, Data: x}, Labels: labels}
}

// HeadBatch returns the first n samples of d as one batch (n ≤ 0 or
// n > d.Len(): all of them).
func HeadBatch(d *data.Dataset, n int) Batch {
	if n <= 0 || n > d.Len() {
		n = d.Len()
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return BatchOf(d, idx)
}

// Batcher yields seeded, shuffled mini-batches epoch after epoch. The same
// seed gives the same sequence of batches.
type Batcher struct {
	data  *data.Dataset
	size  int
	rng   *rand.Rand
	perm  []int
	pos   int
	epoch int
}

// NewBatcher returns a batcher over d with the given batch size (≤ 0 or
// larger than the data set: full batch, no shuffling needed).
func NewBatcher(d *data.Dataset, size int, seed uint64) *Batcher {
	if size <= 0 || size > d.Len() {
		size = d.Len()
	}
	b := &Batcher{data: d, size: size, rng: rand.New(rand.NewPCG(seed, 0xba7c4)), perm: make([]int, d.Len())}
	for i := range b.perm {
		b.perm[i] = i
	}
	b.shuffle()
	return b
}

func (b *Batcher) shuffle() {
	if b.size < b.data.Len() {
		b.rng.Shuffle(len(b.perm), func(i, j int) { b.perm[i], b.perm[j] = b.perm[j], b.perm[i] })
	}
	b.pos = 0
}

// Next returns the next batch and the epoch it belongs to (0-based). A
// trailing partial batch is dropped so every step sees the same batch size.
func (b *Batcher) Next() (Batch, int) {
	if b.pos+b.size > len(b.perm) {
		b.epoch++
		b.shuffle()
	}
	idx := b.perm[b.pos : b.pos+b.size]
	b.pos += b.size
	return BatchOf(b.data, idx), b.epoch
}

// StepsPerEpoch is the number of batches per epoch.
func (b *Batcher) StepsPerEpoch() int { return b.data.Len() / b.size }
