package store

import (
	"unicode/utf8"

	"github.com/hessmon/hessmon/snapshot"
)

// MaxLightDetail is the most bytes of a light snapshot's failure detail the
// store keeps. Light probes run at every due step, and a panic's detail
// carries its stack trace (kilobytes); its head (the panic value and the
// first frames) says what failed, and keeps a light snapshot under 1 KB.
// Full snapshots keep their whole detail.
const MaxLightDetail = 512

// storedDetail returns s.Detail as the store keeps it: cut at a rune
// boundary to MaxLightDetail bytes, ending in "…", for a light snapshot.
func storedDetail(s *snapshot.Snapshot) string {
	d := s.Detail
	if !s.IsLight() || len(d) <= MaxLightDetail {
		return d
	}
	const ellipsis = "…"
	n := MaxLightDetail - len(ellipsis)
	for n > 0 && !utf8.RuneStart(d[n]) {
		n--
	}
	return d[:n] + ellipsis
}
