package blob

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// records is a persistent map from ids to values: with returns a map that holds one more entry
// and leaves the receiver as it was, so that Apply stays pure without copying a blob's records
// of event ids and executions on every delta (which made a fold quadratic in its deltas).
//
// The levels are sorted arrays never written once built, newest last, each shorter than the one
// before it (a binary counter): a get searches at most log2(n)+1 of them, an insert merges the
// levels no longer than the new one, and over n inserts each entry is copied O(log n) times. A
// records value is a slice header; values that share levels never see each other's inserts,
// since with builds a new slice. An entry costs 24 bytes.
type records[V any] struct {
	levels [][]record[V]
}

type record[V any] struct {
	key recordKey
	val V
}

// recordKey names an id by the first 16 bytes of its SHA-256, in less memory than the id
// itself (a UUID's 36 bytes and a string header). Two ids collide with probability 2^-128, far
// below the chance that two UUIDv5 delta ids (122 bits, on which the stream's deduplication
// already rests) do; and a client cannot choose ids that collide.
type recordKey struct{ hi, lo uint64 }

func keyOf(id string) recordKey {
	sum := sha256.Sum256([]byte(id))
	return recordKey{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])}
}

func compareKeys(a, b recordKey) int {
	return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo))
}

func (r records[V]) get(id string) (V, bool) {
	k := keyOf(id)
	for i := len(r.levels) - 1; i >= 0; i-- {
		l := r.levels[i]
		if j, ok := slices.BinarySearchFunc(l, k, func(e record[V], k recordKey) int { return compareKeys(e.key, k) }); ok {
			return l[j].val, true
		}
	}
	var zero V
	return zero, false
}

// with returns the records with id set to v, which shadows an older value of id.
func (r records[V]) with(id string, v V) records[V] {
	top := []record[V]{{key: keyOf(id), val: v}}
	n := len(r.levels)
	for n > 0 && len(r.levels[n-1]) <= len(top) {
		top = merge(r.levels[n-1], top)
		n--
	}
	levels := make([][]record[V], n+1)
	copy(levels, r.levels[:n])
	levels[n] = top
	return records[V]{levels: levels}
}

// merge returns the sorted union of two levels; newer's entry wins a key both hold.
func merge[V any](older, newer []record[V]) []record[V] {
	m := make([]record[V], 0, len(older)+len(newer))
	i, j := 0, 0
	for i < len(older) && j < len(newer) {
		switch c := compareKeys(older[i].key, newer[j].key); {
		case c < 0:
			m = append(m, older[i])
			i++
		case c > 0:
			m = append(m, newer[j])
			j++
		default:
			m = append(m, newer[j])
			i, j = i+1, j+1
		}
	}
	m = append(m, older[i:]...)
	return slices.Clip(append(m, newer[j:]...))
}
