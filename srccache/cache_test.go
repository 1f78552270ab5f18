package srccache

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/mtasts"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func rec(kind Kind, domain string, refresh, expires time.Duration) *Record {
	return &Record{Kind: kind, Domain: domain, Fetched: t0, Checked: t0,
		Refresh: t0.Add(refresh), Expires: t0.Add(expires),
		MTASTS: &MTASTS{ID: "id1", Policy: &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"mx.a.test"}, MaxAge: 86400}}}
}

func TestPutGetDue(t *testing.T) {
	var mu sync.Mutex
	var changes []string
	c, err := New(Options{OnChange: func(old, cur *Record) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case old == nil:
			changes = append(changes, "new "+cur.Domain)
		case cur == nil:
			changes = append(changes, "gone "+old.Domain)
		default:
			changes = append(changes, "replaced "+cur.Domain)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Record{
		rec(KindMTASTS, "b.test", 3*time.Hour, 24*time.Hour),
		rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour),
		rec(KindDANE, "a.test", 2*time.Hour, 4*time.Hour),
	} {
		if err := c.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Get(KindMTASTS, "a.test"); got == nil || got.MTASTS.ID != "id1" {
		t.Fatalf("Get = %+v", got)
	}
	if c.Get(KindDANE, "b.test") != nil || c.Len() != 3 || len(c.ByDomain("a.test")) != 2 {
		t.Fatalf("Len %d, ByDomain %d", c.Len(), len(c.ByDomain("a.test")))
	}
	// The refresh index: earliest first, bounded by now and limit.
	due, next := c.Due(t0.Add(2*time.Hour), 10)
	if len(due) != 2 || due[0].Kind != KindMTASTS || due[1].Kind != KindDANE || !next.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("Due = %v, next %v", due, next)
	}
	if due, next := c.Due(t0.Add(5*time.Hour), 1); len(due) != 1 || !next.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Due with limit 1 = %v, next %v", due, next)
	}
	// Replacing keeps the count; the refresh index follows the new record.
	r := rec(KindMTASTS, "a.test", 5*time.Hour, 24*time.Hour)
	if err := c.Put(r); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3 {
		t.Fatalf("Len after replace %d", c.Len())
	}
	if due, _ := c.Due(t0.Add(4*time.Hour), 10); len(due) != 2 || due[1].Domain != "b.test" {
		t.Fatalf("Due after replace = %v", due)
	}
	if err := c.Delete(KindMTASTS, "a.test"); err != nil || c.Len() != 2 || c.Get(KindMTASTS, "a.test") != nil {
		t.Fatalf("Delete: %v, Len %d", err, c.Len())
	}
	want := []string{"new b.test", "new a.test", "new a.test", "replaced a.test", "gone a.test"}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}

func TestEviction(t *testing.T) {
	var evicted []string
	c, _ := New(Options{MaxRecords: 2, OnEvict: func(r *Record) { evicted = append(evicted, r.Domain) }})
	_ = c.Put(rec(KindMTASTS, "late.test", time.Hour, 48*time.Hour))
	_ = c.Put(rec(KindMTASTS, "soon.test", time.Hour, time.Hour))
	_ = c.Put(rec(KindMTASTS, "mid.test", time.Hour, 24*time.Hour))
	if c.Len() != 2 || c.Get(KindMTASTS, "soon.test") != nil || len(evicted) != 1 || evicted[0] != "soon.test" || c.Evicted() != 1 {
		t.Fatalf("Len %d, evicted %v", c.Len(), evicted)
	}
}

func TestSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.json")
	c, _ := New(Options{Path: path})
	_ = c.Put(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	_ = c.Put(rec(KindMTASTS, "old.test", time.Hour, 2*time.Hour))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	d, _ := New(Options{Path: path})
	n, err := d.Load(t0.Add(3 * time.Hour)) // old.test has expired by then
	if err != nil || n != 1 {
		t.Fatalf("Load = %d, %v", n, err)
	}
	r := d.Get(KindMTASTS, "a.test")
	if r == nil || r.MTASTS.Policy.MX[0] != "mx.a.test" || !r.Expires.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("loaded %+v", r)
	}
	// A corrupt file is an error and loads nothing.
	if err := os.WriteFile(path, []byte(`{"version":1,"records":[{"kind":`), 0o600); err != nil {
		t.Fatal(err)
	}
	e, _ := New(Options{Path: path})
	if n, err := e.Load(t0); err == nil || n != 0 || e.Len() != 0 {
		t.Fatalf("corrupt snapshot: %d, %v", n, err)
	}
	// A missing file is fine.
	f, _ := New(Options{Path: filepath.Join(t.TempDir(), "none.json")})
	if n, err := f.Load(t0); err != nil || n != 0 {
		t.Fatalf("missing snapshot: %d, %v", n, err)
	}
	// No temporary file is left behind.
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp*")); len(m) != 0 {
		t.Fatalf("left %v", m)
	}
}

// Rescheduling and restoring a snapshot are not changes OnChange hears
// of (a shared cache would republish every record at each start);
// rescheduling moves the record in the refresh index.
func TestQuietWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sources.json")
	changes := 0
	c, _ := New(Options{Path: path, OnChange: func(_, _ *Record) { changes++ }})
	r := rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour)
	_ = c.Put(r)
	if err := c.Reschedule(r, t0.Add(20*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if due, next := c.Due(t0.Add(2*time.Hour), 10); len(due) != 0 || !next.Equal(t0.Add(20*time.Hour)) {
		t.Fatalf("after Reschedule: due %v, next %v", due, next)
	}
	if got := c.Get(KindMTASTS, "a.test"); got.Refresh != t0.Add(20*time.Hour) || r.Refresh != t0.Add(time.Hour) {
		t.Fatalf("Reschedule changed the record in place or not at all: %v, %v", got.Refresh, r.Refresh)
	}
	_ = c.Save()
	d, _ := New(Options{Path: path, OnChange: func(_, _ *Record) { changes++ }})
	if n, err := d.Load(t0); n != 1 || err != nil {
		t.Fatalf("Load = %d, %v", n, err)
	}
	if changes != 1 {
		t.Fatalf("OnChange called %d times, want once (the Put)", changes)
	}
}
