package store

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewRunID returns a fresh run id: the UTC start time to the second, which
// sorts ids by age, and 6 random hex digits, which keeps two runs started
// in the same second apart.
func NewRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
