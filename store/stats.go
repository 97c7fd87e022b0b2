package store

import (
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Stats describes how a store file uses its bytes.
type Stats struct {
	// FileBytes is the size of the file on disk.
	FileBytes int64 `json:"file_bytes"`
	// HighWaterBytes is the end of the last page bbolt has used; past it
	// the file holds room preallocated for growth.
	HighWaterBytes int64 `json:"high_water_bytes"`
	// InUseBytes is the pages reachable from the root (every bucket's
	// branch, leaf and overflow pages), the two meta pages and the
	// freelist: what a compacted copy would need, give or take page fill.
	InUseBytes int64 `json:"bytes_in_use"`
	// FreeBytes is HighWaterBytes − InUseBytes: pages bbolt has freed and
	// will reuse.
	FreeBytes int64 `json:"free_bytes"`
	// PageSize is the file's page size.
	PageSize int `json:"page_size"`
}

// Stats walks every bucket's pages (cost proportional to the number of
// pages, not their bytes) and reports the file's use of space.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		ps := int64(s.db.Info().PageSize)
		st.PageSize = int(ps)
		st.HighWaterBytes = tx.Size()
		pages := int64(2 + 1) // meta pages and the root bucket's leaf
		err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			bs := b.Stats()
			pages += int64(bs.BranchPageN + bs.BranchOverflowN + bs.LeafPageN + bs.LeafOverflowN)
			return nil
		})
		if err != nil {
			return err
		}
		// The freelist holds 8 bytes per free page id after a 16-byte page
		// header (and an 8-byte count when it overflows the 64k-id header).
		free := max(0, st.HighWaterBytes/ps-pages)
		pages += (16 + 8 + 8*free + ps - 1) / ps
		st.InUseBytes = min(pages*ps, st.HighWaterBytes)
		st.FreeBytes = st.HighWaterBytes - st.InUseBytes
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return Stats{}, fmt.Errorf("store: %w", err)
	}
	st.FileBytes = fi.Size()
	return st, nil
}
