package data_test

import (
	"fmt"

	"github.com/hessmon/hessmon/data"
)

// A hand-written loop takes plain row-major samples from a data set.
func ExampleDataset_Gather() {
	d := data.Synthetic(100, data.Shape{H: 1, W: 1, C: 8}, 3, 1)
	x, labels := d.Gather([]int{4, 2})
	fmt.Println(d.Len(), d.Shape, len(x), len(labels))
	// Output: 100 [8] 16 2
}
