package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestKeyIndex: a keyIndex finds what a map would, across growth from
// the zero value and from a sized table, and reports the first entry of
// a duplicate key.
func TestKeyIndex(t *testing.T) {
	for _, tt := range []struct {
		name  string
		n     int
		sized bool
	}{{"empty", 0, false}, {"one", 1, true}, {"grown", 5000, false}, {"sized", 5000, true}} {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tt.n)))
			var x keyIndex
			if tt.sized {
				x = *newKeyIndex(tt.n)
			}
			var list []*Entry
			want := map[string]int{}
			for range tt.n {
				// Few enough distinct keys that some repeat.
				key := fmt.Sprintf("k%d.example", r.IntN(tt.n*3/4+1))
				list = append(list, &Entry{Key: key})
				first := x.insert(list, len(list)-1)
				if p, dup := want[key]; dup {
					if first != p {
						t.Fatalf("insert of duplicate %q = %d, want %d", key, first, p)
					}
					list = list[:len(list)-1]
					continue
				}
				if first != -1 {
					t.Fatalf("insert of new %q = %d, want -1", key, first)
				}
				want[key] = len(list) - 1
			}
			if x.n != len(want) || 2*x.n > len(x.slots) && x.n > 0 {
				t.Errorf("%d keys in %d slots, want %d keys at most half full", x.n, len(x.slots), len(want))
			}
			for key, p := range want {
				if got := x.find(list, key); got != p {
					t.Errorf("find(%q) = %d, want %d", key, got, p)
				}
			}
			for _, miss := range []string{"", "k.example", "nope", fmt.Sprintf("k%d.example", tt.n)} {
				if got := x.find(list, miss); got != -1 && list[got].Key != miss {
					t.Errorf("find(%q) = %d (%q)", miss, got, list[got].Key)
				}
			}
		})
	}
}
