//go:build !((linux || freebsd) && (amd64 || arm64))

package rtblas

import (
	"fmt"

	"gonum.org/v1/gonum/blas/gonum"
)

// Implementation is gonum's on platforms where hessmon does not load a
// BLAS at run time.
type Implementation struct{ gonum.Implementation }

// Load always fails here: run-time loading is implemented for Linux and
// FreeBSD on amd64 and arm64.
func Load(name string, _ bool) (*Implementation, Info, error) {
	return nil, Info{}, fmt.Errorf("loading %s: %w (run-time BLAS is implemented for Linux and FreeBSD on amd64 and arm64)", name, ErrNotInstalled)
}

// ForwardAll returns impl.
func (impl *Implementation) ForwardAll() *Implementation { return impl }

// Threads is 0: no library.
func (impl *Implementation) Threads() int { return 0 }
