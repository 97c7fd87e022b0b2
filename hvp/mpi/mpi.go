//go:build mpi

package mpi

/*
#cgo pkg-config: ompi
#include <mpi.h>

static int hm_initialized(int *flag) { return MPI_Initialized(flag); }
static int hm_finalized(int *flag) { return MPI_Finalized(flag); }
static int hm_init(int *provided) {
	int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, provided);
	if (rc != MPI_SUCCESS) return rc;
	// Report errors as return codes instead of aborting the job, so they
	// become Go errors.
	return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
static int hm_funneled(void) { return MPI_THREAD_FUNNELED; }
static int hm_rank(int *r) { return MPI_Comm_rank(MPI_COMM_WORLD, r); }
static int hm_size(int *s) { return MPI_Comm_size(MPI_COMM_WORLD, s); }
static int hm_allreduce_sum(double *buf, int n) {
	return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static int hm_bcast(void *buf, int n, int root) {
	return MPI_Bcast(buf, n, MPI_BYTE, root, MPI_COMM_WORLD);
}
static int hm_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static int hm_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
static int hm_finalize(void) { return MPI_Finalize(); }
static void hm_error_string(int code, char *s, int *len) {
	if (MPI_Error_string(code, s, len) != MPI_SUCCESS) *len = 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/hessmon/hessmon/hvp"
)

// ErrClosed is returned by calls on a Comm after Close.
var ErrClosed = errors.New("mpi: communicator closed (MPI finalised)")

// Comm is MPI_COMM_WORLD. It implements hvp.Comm. Its methods may be called
// from any goroutine; they are executed one at a time on the thread that
// initialised MPI. Collective calls (AllreduceSum, Broadcast, Barrier, Close) must be
// made by every rank in the same order.
type Comm struct {
	rank, size int
	reqs       chan request
	done       chan struct{} // closed when the MPI thread has exited
}

var _ hvp.Comm = (*Comm)(nil)

// request is one MPI call to run on the MPI thread.
type request struct {
	do    func() error
	reply chan error
	last  bool // finalise: the MPI thread exits after it
}

// Init initialises MPI (MPI_Init_thread with MPI_THREAD_FUNNELED) on a new
// OS thread dedicated to MPI and returns MPI_COMM_WORLD. Call it once per
// process, from any goroutine, and Close the Comm before the process ends:
// Open MPI treats a process that exits without MPI_Finalize as a crash.
// Run the program under mpirun; started directly it is a group of one.
func Init() (*Comm, error) {
	c := &Comm{reqs: make(chan request), done: make(chan struct{})}
	started := make(chan error, 1)
	go c.serve(started)
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

// serve owns MPI: it initialises it, then runs requests until Finalize.
// The goroutine stays locked to its thread for good, so the thread exits
// with it and no other goroutine ever runs on the thread MPI knows.
func (c *Comm) serve(started chan<- error) {
	runtime.LockOSThread()
	defer close(c.done)
	if err := c.init(); err != nil {
		started <- err
		return
	}
	started <- nil
	for req := range c.reqs {
		req.reply <- req.do()
		if req.last {
			return
		}
	}
}

func (c *Comm) init() error {
	var flag C.int
	if rc := C.hm_finalized(&flag); rc != C.MPI_SUCCESS || flag != 0 {
		return errors.New("mpi: MPI was already finalised in this process and cannot be restarted")
	}
	if rc := C.hm_initialized(&flag); rc != C.MPI_SUCCESS || flag != 0 {
		return errors.New("mpi: MPI is already initialised in this process: call Init once and share the Comm")
	}
	var provided, rank, size C.int
	if rc := C.hm_init(&provided); rc != C.MPI_SUCCESS {
		return mpiError("MPI_Init_thread", rc)
	}
	if provided < C.hm_funneled() {
		C.hm_finalize()
		return fmt.Errorf("mpi: the MPI library provides thread level %d, below MPI_THREAD_FUNNELED", int(provided))
	}
	if rc := C.hm_rank(&rank); rc != C.MPI_SUCCESS {
		return mpiError("MPI_Comm_rank", rc)
	}
	if rc := C.hm_size(&size); rc != C.MPI_SUCCESS {
		return mpiError("MPI_Comm_size", rc)
	}
	c.rank, c.size = int(rank), int(size)
	return nil
}

// call runs f on the MPI thread and waits for it.
func (c *Comm) call(f func() error, last bool) error {
	reply := make(chan error, 1)
	select {
	case c.reqs <- request{do: f, reply: reply, last: last}:
		return <-reply
	case <-c.done:
		return ErrClosed
	}
}

// Rank is this process's rank in MPI_COMM_WORLD.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of processes in MPI_COMM_WORLD.
func (c *Comm) Size() int { return c.size }

// AllreduceSum replaces buf on every rank by the elementwise sum over all
// ranks (MPI_Allreduce, MPI_IN_PLACE, MPI_DOUBLE, MPI_SUM). Open MPI's
// reduction algorithms give every rank the same bits, which lockstep
// estimators rely on.
func (c *Comm) AllreduceSum(buf []float64) error {
	if len(buf) == 0 {
		return nil
	}
	return c.call(func() error {
		for off := 0; off < len(buf); off += math.MaxInt32 {
			n := min(len(buf)-off, math.MaxInt32)
			if rc := C.hm_allreduce_sum((*C.double)(unsafe.Pointer(&buf[off])), C.int(n)); rc != C.MPI_SUCCESS {
				return mpiError("MPI_Allreduce", rc)
			}
		}
		return nil
	}, false)
}

// Broadcast copies root's buf into every other rank's buf (MPI_Bcast of
// MPI_BYTE). Every rank must pass a buffer of the same length and the same
// root; an empty buffer returns at once on every rank.
func (c *Comm) Broadcast(buf []byte, root int) error {
	if root < 0 || root >= c.size {
		// The same on every rank (the arguments are), so no rank waits.
		return fmt.Errorf("mpi: Broadcast from root %d in a group of %d", root, c.size)
	}
	if len(buf) == 0 {
		return nil
	}
	return c.call(func() error {
		for off := 0; off < len(buf); off += math.MaxInt32 {
			n := min(len(buf)-off, math.MaxInt32)
			if rc := C.hm_bcast(unsafe.Pointer(&buf[off]), C.int(n), C.int(root)); rc != C.MPI_SUCCESS {
				return mpiError("MPI_Bcast", rc)
			}
		}
		return nil
	}, false)
}

// Barrier blocks until every rank has called it.
func (c *Comm) Barrier() error {
	return c.call(func() error {
		if rc := C.hm_barrier(); rc != C.MPI_SUCCESS {
			return mpiError("MPI_Barrier", rc)
		}
		return nil
	}, false)
}

// Abort terminates every process of the job with the exit code (MPI_Abort).
// It is the way out when one rank fails alone and the others would wait
// for it in a collective call forever. It returns only if MPI cannot abort.
func (c *Comm) Abort(code int) error {
	return c.call(func() error { return mpiError("MPI_Abort", C.hm_abort(C.int(code))) }, false)
}

// Close finalises MPI (MPI_Finalize) and ends the MPI thread. It is
// collective. Later calls on c, Close included, return ErrClosed.
func (c *Comm) Close() error {
	return c.call(func() error {
		if rc := C.hm_finalize(); rc != C.MPI_SUCCESS {
			return mpiError("MPI_Finalize", rc)
		}
		return nil
	}, true)
}

// mpiError turns an MPI return code into an error; call it on the MPI thread.
func mpiError(call string, rc C.int) error {
	var buf [C.MPI_MAX_ERROR_STRING + 1]C.char
	var n C.int
	C.hm_error_string(rc, &buf[0], &n)
	if n <= 0 {
		return fmt.Errorf("mpi: %s failed with code %d", call, int(rc))
	}
	return fmt.Errorf("mpi: %s: %s (code %d)", call, C.GoStringN(&buf[0], n), int(rc))
}
