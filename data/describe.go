package data

import "fmt"

// Describe names the data set with its size, as runs record it:
// "mnist-train (60000 samples)".
func (d *Dataset) Describe() string {
	return fmt.Sprintf("%s (%d samples)", d.Name, d.Len())
}
