package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// The warm state is the one large value the store rewrites: five
// eigenvectors of a 118k-parameter model are 4.7 MB, rewritten at every
// save. Stored as one bbolt value it made the file grow to 7× its live
// size (35.8 MB for 4.9 MB in use after 100 saves), for three reasons:
//
//   - bbolt is copy-on-write: a transaction that replaces a value of n
//     pages writes n new contiguous pages before the old n are freed, at
//     the end of the transaction, so one save needs twice the state's size.
//   - A value larger than a page lives on a run of contiguous pages, and
//     the freelist hands out pages first-fit by address: the one- and
//     two-page allocations of every snapshot write chip pieces off the
//     lowest free runs, so a freed run rarely fits the next save, which
//     then goes to the end of the file. (Chunks of equal page runs, each
//     in its own transaction so that each frees the run the next needs,
//     still grew the file 1 MB at a time for this reason.)
//   - bbolt grows a file by doubling it up to 16 MiB and then by 16 MiB
//     (its AllocSize); the store grows it by 1 MiB (growBytes).
//
// So the state is cut into pieces of which exactly four fill a leaf page,
// and no value of it ever needs more than one page: every allocation is a
// single page, which any free page satisfies, so fragmentation cannot grow
// the file. The pieces are rewritten in place, a bounded batch per fsynced
// transaction (1 MiB, or 1/16 of a larger state), so a save needs one
// batch of spare room instead of a second copy of the state. The layout
// under runs/<id> is
//
//	warmstate/head          header: state (writing/complete), generation,
//	                        length, piece size, piece count, CRC-32C, time
//	warmstate/pieces/<i>    piece i, i as 4-byte big-endian
//
// The price of writing in place: while a save is in progress the previous
// state is partly overwritten. The header marks the state "writing" in the
// first batch's transaction and "complete" in the last one's, so a crash
// in between leaves no warm state (Warm returns nil and the resumed run's
// first probe is cold), never a mixed one.

var (
	bucketWarmState = []byte("warmstate")
	bucketPieces    = []byte("pieces")
	keyWarmHead     = []byte("head")
)

const (
	warmHeadMagic   = "HMWH"
	warmHeadVersion = 1
	warmHeadLen     = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 4 + 4 + 8
	warmWriting     = 1
	warmComplete    = 2
	// minBatchBytes is the least a save writes per transaction; larger
	// states take at most maxBatches transactions.
	minBatchBytes = 1 << 20
	maxBatches    = 16
	// pageHeader and leafElement are bbolt's page header and leaf element
	// sizes, pieceKeyLen the length of a piece's key.
	pageHeader  = 16
	leafElement = 16
	pieceKeyLen = 4
)

// piecesPerLeaf pieces and their leaf elements fill a page exactly. bbolt
// never splits a leaf of four keys or fewer (and leaves at least two on
// each side of a split), so with one or two pieces a page the last leaf
// of a save would hold three or four of them, an overflow run; with four,
// every leaf fits its page.
const piecesPerLeaf = 4

// pieceBytes is the piece size for pages of ps bytes.
func pieceBytes(ps int) int { return (ps-pageHeader)/piecesPerLeaf - leafElement - pieceKeyLen }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WarmInfo describes a run's stored warm state without reading it.
type WarmInfo struct {
	// Gen counts the saves of the state in this file (1 after the first).
	Gen uint64
	// Bytes is the length of the state and Pieces the number of its
	// page-sized pieces.
	Bytes  int64
	Pieces int
	// Complete is false when the last save was cut short (a crash during
	// PutWarm): then there is no usable state and Warm returns nil.
	Complete bool
	// Written is when the last save began.
	Written time.Time
}

// warmHead is the decoded warmstate/head record.
type warmHead struct {
	state      byte
	gen        uint64
	length     uint64
	pieceBytes uint32
	pieces     uint32
	crc        uint32
	written    int64
}

func (h warmHead) encode() []byte {
	b := make([]byte, 0, warmHeadLen)
	b = append(b, warmHeadMagic...)
	b = append(b, warmHeadVersion, h.state, 0, 0)
	b = binary.BigEndian.AppendUint64(b, h.gen)
	b = binary.BigEndian.AppendUint64(b, h.length)
	b = binary.BigEndian.AppendUint32(b, h.pieceBytes)
	b = binary.BigEndian.AppendUint32(b, h.pieces)
	b = binary.BigEndian.AppendUint32(b, h.crc)
	return binary.BigEndian.AppendUint64(b, uint64(h.written))
}

// decodeWarmHead parses a header; any malformed input is ErrCorrupt.
func decodeWarmHead(b []byte) (warmHead, error) {
	var h warmHead
	if len(b) != warmHeadLen || string(b[:4]) != warmHeadMagic {
		return h, fmt.Errorf("%w: warm state header of %d bytes", ErrCorrupt, len(b))
	}
	if b[4] != warmHeadVersion {
		return h, fmt.Errorf("%w: warm state header version %d, want %d", ErrCorrupt, b[4], warmHeadVersion)
	}
	h.state = b[5]
	h.gen = binary.BigEndian.Uint64(b[8:])
	h.length = binary.BigEndian.Uint64(b[16:])
	h.pieceBytes = binary.BigEndian.Uint32(b[24:])
	h.pieces = binary.BigEndian.Uint32(b[28:])
	h.crc = binary.BigEndian.Uint32(b[32:])
	h.written = int64(binary.BigEndian.Uint64(b[36:]))
	switch {
	case h.state != warmWriting && h.state != warmComplete:
		return h, fmt.Errorf("%w: warm state header state %d", ErrCorrupt, h.state)
	case h.pieceBytes == 0:
		return h, fmt.Errorf("%w: warm state piece size 0", ErrCorrupt)
	}
	if n, ok := pieceCount(h.length, int(h.pieceBytes)); !ok || n != h.pieces {
		return h, fmt.Errorf("%w: warm state of %d bytes in %d pieces of %d", ErrCorrupt, h.length, h.pieces, h.pieceBytes)
	}
	return h, nil
}

// pieceCount is the number of pieces of pieceBytes a state of length
// bytes takes; ok is false when that does not fit a uint32.
func pieceCount(length uint64, pieceBytes int) (n uint32, ok bool) {
	c := (length + uint64(pieceBytes) - 1) / uint64(pieceBytes)
	if length > math.MaxUint64-uint64(pieceBytes) || c > math.MaxUint32 {
		return 0, false
	}
	return uint32(c), true
}

func pieceKey(i uint32) []byte { return binary.BigEndian.AppendUint32(nil, i) }

// PutWarm stores the estimators' serialised warm state for run, so that a
// resumed run starts warm; the store does not interpret it. The state is
// rewritten in place in page-sized pieces, a batch of them per fsynced
// transaction, so the file needs one batch (1 MiB, or 1/16 of a larger
// state) of spare room rather than a second copy of the state. If the
// process dies during PutWarm, the run is left without a warm state (see
// Warm), never with a mixed one.
func (s *Store) PutWarm(run string, b []byte) error {
	if err := validRunID(run); err != nil {
		return err
	}
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	pb := pieceBytes(s.db.Info().PageSize)
	pieces, ok := pieceCount(uint64(len(b)), pb)
	if !ok {
		return fmt.Errorf("store: warm state of %d bytes is too large", len(b))
	}
	h := warmHead{
		state:      warmWriting,
		length:     uint64(len(b)),
		pieceBytes: uint32(pb),
		pieces:     pieces,
		crc:        crc32.Checksum(b, castagnoli),
		written:    time.Now().UnixNano(),
	}
	// Whole leaves per batch, so that a save writes no leaf twice.
	batch := max(minBatchBytes, len(b)/maxBatches) / pb
	batch = max(piecesPerLeaf, batch-batch%piecesPerLeaf)
	batches := max(1, (int(h.pieces)+batch-1)/batch)
	for k := range batches {
		err := s.update(func(tx *bolt.Tx) error {
			rb, err := runBucket(tx, run, true, snapshot.Run{ID: run})
			if err != nil {
				return err
			}
			wb, err := rb.CreateBucketIfNotExists(bucketWarmState)
			if err != nil {
				return err
			}
			pcs, err := wb.CreateBucketIfNotExists(bucketPieces)
			if err != nil {
				return err
			}
			pcs.FillPercent = 1
			if k == 0 {
				h.gen = 1
				if old := wb.Get(keyWarmHead); old != nil {
					if oh, err := decodeWarmHead(old); err == nil {
						h.gen = oh.gen + 1
					}
				}
				// A state written by an older hessmon is superseded.
				if err := rb.Delete(keyWarm); err != nil {
					return err
				}
			}
			for i := k * batch; i < min(int(h.pieces), (k+1)*batch); i++ {
				if err := pcs.Put(pieceKey(uint32(i)), b[i*pb:min(len(b), (i+1)*pb)]); err != nil {
					return err
				}
			}
			if k == batches-1 {
				if err := dropPieces(pcs, h.pieces); err != nil {
					return err
				}
				h.state = warmComplete
			}
			return wb.Put(keyWarmHead, h.encode())
		})
		if err == nil && s.afterBatch != nil && k < batches-1 {
			err = s.afterBatch()
		}
		if err != nil {
			return fmt.Errorf("store: saving warm state of run %q (batch %d of %d): %w", run, k+1, batches, err)
		}
	}
	return nil
}

// dropPieces deletes the pieces numbered n and above, left by a larger
// earlier state.
func dropPieces(pcs *bolt.Bucket, n uint32) error {
	c := pcs.Cursor()
	for k, _ := c.Seek(pieceKey(n)); k != nil; k, _ = c.Seek(pieceKey(n)) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Warm returns the warm state stored for run, or nil and no error when
// there is none: a fresh run, an unknown run, or a save that a crash cut
// short. A fresh run simply starts cold. A complete state that fails its
// checksum is ErrCorrupt.
func (s *Store) Warm(run string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if errors.Is(err, ErrUnknownRun) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = readWarm(rb, run)
		return err
	})
	return out, err
}

func readWarm(rb *bolt.Bucket, run string) ([]byte, error) {
	if v := rb.Get(keyWarm); v != nil {
		return bytes.Clone(v), nil // written by an older hessmon
	}
	wb := rb.Bucket(bucketWarmState)
	if wb == nil {
		return nil, nil
	}
	hb := wb.Get(keyWarmHead)
	if hb == nil {
		return nil, nil
	}
	h, err := decodeWarmHead(hb)
	if err != nil {
		return nil, fmt.Errorf("run %q: %w", run, err)
	}
	if h.state != warmComplete {
		return nil, nil
	}
	pcs := wb.Bucket(bucketPieces)
	if pcs == nil {
		return nil, fmt.Errorf("run %q: %w: warm state without pieces", run, ErrCorrupt)
	}
	out, err := assembleWarm(h, func(i uint32) []byte { return pcs.Get(pieceKey(i)) })
	if err != nil {
		return nil, fmt.Errorf("run %q: %w", run, err)
	}
	return out, nil
}

// assembleWarm concatenates the pieces of a complete state, checking each
// one's size and the whole state's checksum. It allocates no more than the
// pieces actually hold, whatever the header claims.
func assembleWarm(h warmHead, piece func(uint32) []byte) ([]byte, error) {
	out := []byte{}
	for i := range h.pieces {
		c := piece(i)
		want := uint64(h.pieceBytes)
		if i == h.pieces-1 {
			want = h.length - uint64(i)*uint64(h.pieceBytes)
		}
		if uint64(len(c)) != want {
			return nil, fmt.Errorf("%w: warm state piece %d has %d bytes, want %d", ErrCorrupt, i, len(c), want)
		}
		out = append(out, c...)
	}
	if crc32.Checksum(out, castagnoli) != h.crc {
		return nil, fmt.Errorf("%w: warm state checksum mismatch", ErrCorrupt)
	}
	return out, nil
}

// WarmInfo describes run's stored warm state; ok is false when there is
// none.
func (s *Store) WarmInfo(run string) (info WarmInfo, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if errors.Is(err, ErrUnknownRun) {
			return nil
		}
		if err != nil {
			return err
		}
		if v := rb.Get(keyWarm); v != nil {
			info, ok = WarmInfo{Bytes: int64(len(v)), Pieces: 1, Complete: true}, true
			return nil
		}
		wb := rb.Bucket(bucketWarmState)
		if wb == nil || wb.Get(keyWarmHead) == nil {
			return nil
		}
		h, err := decodeWarmHead(wb.Get(keyWarmHead))
		if err != nil {
			return fmt.Errorf("run %q: %w", run, err)
		}
		info = WarmInfo{Gen: h.gen, Bytes: int64(h.length), Pieces: int(h.pieces),
			Complete: h.state == warmComplete, Written: time.Unix(0, h.written)}
		ok = true
		return nil
	})
	return info, ok, err
}
