package srccache

import (
	"testing"
	"time"
)

// PutAll writes and deletes many records of a kind in one transaction,
// as Put and Delete would one by one: counts, Get, the refresh index,
// OnChange, the kind's bound and its eviction listeners; another kind is
// untouched.
func TestPutAll(t *testing.T) {
	var changes, evicted int
	c, _ := New(Options{Max: map[Kind]int{KindWatch: 3}, OnChange: func(_, _ *Record) { changes++ }})
	c.OnEvict(KindWatch, func(*Record) { evicted++ })
	_ = c.Put(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	_ = c.Put(rec(KindWatch, "old", time.Hour, time.Hour))
	changes = 0
	w := func(key string, refresh, expires time.Duration) *Record {
		r := rec(KindWatch, key, refresh, expires)
		r.MTASTS = nil
		return r
	}
	if err := c.PutAll(KindWatch, []*Record{w("b", 2*time.Hour, 48*time.Hour), w("c", 3*time.Hour, 48*time.Hour)}, []string{"old", "none"}); err != nil {
		t.Fatal(err)
	}
	if c.Count(KindWatch) != 2 || c.Count(KindMTASTS) != 1 || c.Len() != 3 || c.Get(KindWatch, "old") != nil || c.Get(KindWatch, "b") == nil || changes != 3 {
		t.Fatalf("counts %d/%d/%d, changes %d", c.Count(KindWatch), c.Count(KindMTASTS), c.Len(), changes)
	}
	if due, _ := c.DueKind(KindWatch, t0.Add(2*time.Hour), 10); len(due) != 1 || due[0].Domain != "b" {
		t.Fatalf("DueKind = %v", due)
	}
	// Over the bound of 3: the record expiring first goes.
	if err := c.PutAll(KindWatch, []*Record{w("d", time.Hour, time.Hour), w("e", time.Hour, 72*time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if c.Count(KindWatch) != 3 || c.Get(KindWatch, "d") != nil || evicted != 1 || c.Evicted() != 1 || c.Len() != 4 {
		t.Fatalf("after eviction: %d watch records, evicted %d", c.Count(KindWatch), evicted)
	}
	if err := c.PutAll(KindWatch, []*Record{rec(KindMTASTS, "x", 0, time.Hour)}, nil); err == nil {
		t.Fatal("PutAll took a record of another kind")
	}
}
