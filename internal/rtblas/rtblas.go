// Package rtblas chooses, once per process, the BLAS behind gonum's blas64
// interface: a system BLAS loaded at run time (OpenBLAS through
// github.com/ebitengine/purego, no cgo) when the machine has one, else
// gonum's pure-Go implementation.
//
// The choice is made by [Init], guarded by a sync.Once, and installed with
// blas64.Use, which is the one piece of process-wide state involved (gonum
// designed it so). hessmon's trainer calls Init when it builds a network, so
// every GEMM of the layers and every vector operation of the estimators sees
// the same BLAS. The HESSMON_BLAS environment variable overrides the choice:
//
//	auto      (default) OpenBLAS if it loads, else gonum
//	openblas  OpenBLAS; a load failure is logged as a warning and gonum is used
//	gonum     pure-Go gonum, never load a library
//	/path/x.so  a specific shared library with the Fortran BLAS symbols
//
// OpenBLAS runs each call on one thread unless HESSMON_BLAS_THREADS (or
// OpenBLAS's own OPENBLAS_NUM_THREADS) says otherwise; the trainer splits
// large products over GOMAXPROCS goroutines instead. Goroutines block
// where OpenBLAS's workers spin, so a training loop, an asynchronous probe
// and other processes share the cores under Go's scheduler.
//
// The package is internal: which BLAS runs is a deployment matter, and
// users see it through trainer.BLAS.
package rtblas

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/blas/gonum"
)

// EnvVar is the environment variable that overrides the choice.
const EnvVar = "HESSMON_BLAS"

// ErrNotInstalled marks a library that is absent (or is not OpenBLAS when
// OpenBLAS is asked for): in auto mode that is a normal, silent fallback.
var ErrNotInstalled = errors.New("not installed")

// Info says which BLAS the process uses.
type Info struct {
	Name    string `json:"name"`              // "openblas", "gonum", or the library's name
	File    string `json:"file,omitempty"`    // the shared library file that was loaded
	Config  string `json:"config,omitempty"`  // OpenBLAS's build string (core, threading)
	Threads int    `json:"threads,omitempty"` // OpenBLAS threads; 0 for gonum
	Request string `json:"request"`           // the HESSMON_BLAS value that led here ("auto" when unset)
	// Fallback is why a requested or found library is not used; empty when
	// the choice is what was asked for.
	Fallback string `json:"fallback,omitempty"`
	absent   bool   // every candidate was absent (the normal case without OpenBLAS)
}

// String is a one-line description for logs:
// "openblas (/usr/lib/…/libopenblasp-r0.3.21.so, 1 thread per call)".
func (i Info) String() string {
	if i.File == "" {
		switch {
		case i.absent:
			return i.Name + " (no OpenBLAS found)"
		case i.Fallback != "":
			return i.Name + " (fallback: " + i.Fallback + ")"
		}
		return i.Name
	}
	threads := fmt.Sprintf("%d threads", i.Threads)
	if i.Threads == 1 {
		threads = "1 thread per call"
	}
	return fmt.Sprintf("%s (%s, %s)", i.Name, i.File, threads)
}

// Loaded reports whether a run-time library serves the BLAS calls.
func (i Info) Loaded() bool { return i.File != "" }

var (
	once   sync.Once
	chosen Info
)

// Init makes the choice on its first call and installs it with blas64.Use;
// later calls return the same Info. A library that fails to load is never
// fatal: Init logs one warning with slog.Default and keeps gonum.
//
// Init must not race with a caller's own blas64.Use; a program that installs
// its own BLAS should do so after Init (or not use hessmon's trainer).
func Init() Info {
	once.Do(func() {
		var broken bool
		chosen, broken = choose(os.Getenv(EnvVar), defaultRequest)
		if chosen.Fallback != "" && (chosen.Request != "auto" || broken) {
			slog.Warn("hessmon: BLAS requested by "+EnvVar+" is not available; using pure-Go gonum",
				"request", chosen.Request, "reason", chosen.Fallback)
		}
	})
	return chosen
}

// choose resolves a request and installs the implementation. It is
// separate from Init so tests can drive every branch. broken reports a
// library that exists but failed to load (always worth a warning).
func choose(req, def string) (info Info, broken bool) {
	req = strings.TrimSpace(req)
	if req == "" {
		req = def
	}
	info = Info{Name: "gonum", Request: req}
	candidates, requireOpenBLAS := openBLASSonames(), true
	switch strings.ToLower(req) {
	case "gonum", "go", "native":
		use(gonum.Implementation{})
		return info, false
	case "auto", "openblas":
	default:
		if !strings.ContainsAny(req, "/.") {
			info.Fallback = fmt.Sprintf("unknown %s=%q (want auto, openblas, gonum or a library path)", EnvVar, req)
			use(gonum.Implementation{})
			return info, false
		}
		candidates, requireOpenBLAS = []string{req}, false
	}
	var reasons []string
	for _, c := range candidates {
		impl, li, err := Load(c, requireOpenBLAS)
		if err != nil {
			reasons = append(reasons, err.Error())
			broken = broken || !errors.Is(err, ErrNotInstalled)
			continue
		}
		li.Request = req
		use(impl)
		return li, false
	}
	info.Fallback = strings.Join(reasons, "; ")
	info.absent = !broken && requireOpenBLAS
	use(gonum.Implementation{})
	return info, broken
}

// openBLASSonames are the names Debian's libopenblas0 installs, in the
// order tried. libblas.so.3 is the alternatives link, which may point at
// OpenBLAS or at the reference BLAS; Load refuses the latter (it is slower
// than gonum) unless named by path.
func openBLASSonames() []string {
	return []string{"libopenblas.so.0", "libopenblas.so", "libblas.so.3"}
}

// use installs impl for both precisions: float64 for training and the
// estimators, float32 for float32 HVPs.
func use(impl interface {
	blas.Float64
	blas.Float32
}) {
	blas64.Use(impl)
	blas32.Use(impl)
}
