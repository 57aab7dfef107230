package blob

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRecordsArePersistent inserts into random earlier versions of a records value, as states
// copied before an Apply do, and checks every version against a map of its own: an insert is
// seen by the value it returns only, and the levels stay at most log2(n)+1.
func TestRecordsArePersistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type version struct {
		r    records[int]
		want map[string]int
	}
	versions := []version{{want: map[string]int{}}}
	for i := range 3000 {
		from := versions[len(versions)-1]
		if rng.IntN(10) == 0 {
			from = versions[rng.IntN(len(versions))] // a branch from an older copy
		}
		id := "id-" + strconv.Itoa(rng.IntN(2000)) // some ids again: newer values shadow
		next := version{r: from.r.with(id, i), want: map[string]int{id: i}}
		for k, v := range from.want {
			if k != id {
				next.want[k] = v
			}
		}
		versions = append(versions, next)
	}
	for n, v := range versions {
		for k, want := range v.want {
			got, ok := v.r.get(k)
			require.True(t, ok, "version %d lost %s", n, k)
			require.Equal(t, want, got, "version %d, %s", n, k)
		}
		_, ok := v.r.get("id-never")
		require.False(t, ok)
		total := 0
		for _, l := range v.r.levels {
			total += len(l)
		}
		require.LessOrEqual(t, len(v.r.levels), bitsLen(total)+1, "version %d", n)
	}
}

func bitsLen(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}
