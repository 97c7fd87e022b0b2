package trainer

import "github.com/hessmon/hessmon/data"

// ProbeBatch draws the fixed, seeded batch of n samples of d on which a
// run's Hessian is probed. The same d, n and seed give the same batch.
func ProbeBatch(d *data.Dataset, n int, seed uint64) Batch {
	b := NewBatcher(d, n, seed^0x70be)
	batch, _ := b.Next()
	return batch
}
