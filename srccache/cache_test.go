package srccache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
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
	var evicted, heard []string
	c, _ := New(Options{Max: map[Kind]int{KindMTASTS: 2}, OnEvict: func(r *Record) { evicted = append(evicted, r.Domain) }})
	c.OnEvict(KindMTASTS, func(r *Record) { heard = append(heard, string(r.Kind)+" "+r.Domain) })
	_ = c.Put(rec(KindDANE, "dane.test", time.Hour, time.Minute)) // expires first, but of another kind
	_ = c.Put(rec(KindMTASTS, "late.test", time.Hour, 48*time.Hour))
	_ = c.Put(rec(KindMTASTS, "soon.test", time.Hour, time.Hour))
	_ = c.Put(rec(KindMTASTS, "mid.test", time.Hour, 24*time.Hour))
	if c.Count(KindMTASTS) != 2 || c.Count(KindDANE) != 1 || c.Len() != 3 || c.Get(KindMTASTS, "soon.test") != nil ||
		len(evicted) != 1 || evicted[0] != "soon.test" || c.Evicted() != 1 || c.EvictedKind(KindMTASTS) != 1 || c.EvictedKind(KindDANE) != 0 {
		t.Fatalf("Len %d, mta-sts %d, evicted %v", c.Len(), c.Count(KindMTASTS), evicted)
	}
	if len(heard) != 1 || heard[0] != "mta-sts soon.test" {
		t.Fatalf("kind listener heard %v", heard)
	}
	if got := c.ByKind(KindMTASTS); len(got) != 2 || got[0].Domain != "late.test" || got[1].Domain != "mid.test" {
		t.Fatalf("ByKind = %v", got)
	}
}

// A time past the int64 nanoseconds (year 2262; a fleet peer's result
// may carry one) sorts after every other: a record refreshed or expiring
// then neither hides the records due before it nor is evicted first.
func TestFarTimesSortLast(t *testing.T) {
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	c, _ := New(Options{Max: map[Kind]int{KindWatch: 2}})
	_ = c.Put(&Record{Kind: KindWatch, Domain: "far", Refresh: far, Expires: far})
	_ = c.Put(&Record{Kind: KindWatch, Domain: "due", Refresh: t0.Add(-time.Second), Expires: t0.Add(time.Hour)})
	if due, next := c.DueKind(KindWatch, t0, 10); len(due) != 1 || due[0].Domain != "due" || !next.Equal(far) {
		t.Fatalf("DueKind = %v, next %v: the far record hides the due one", due, next)
	}
	if due, _ := c.Due(t0, 10); len(due) != 1 || due[0].Domain != "due" {
		t.Fatalf("Due = %v", due)
	}
	_ = c.Put(&Record{Kind: KindWatch, Domain: "new", Refresh: t0.Add(time.Hour), Expires: t0.Add(2 * time.Hour)})
	if c.Get(KindWatch, "far") == nil || c.Get(KindWatch, "due") != nil {
		t.Fatal("eviction took the record expiring last")
	}
}

// DueKind walks one kind's refresh order only.
func TestDueKind(t *testing.T) {
	c, _ := New(Options{})
	_ = c.Put(rec(KindDANE, "d1.test", time.Minute, time.Hour))
	_ = c.Put(rec(KindMTASTS, "m2.test", 3*time.Hour, 24*time.Hour))
	_ = c.Put(rec(KindMTASTS, "m1.test", 2*time.Hour, 24*time.Hour))
	_ = c.Put(rec(KindWatch, "w.test", 0, 24*time.Hour))
	due, next := c.DueKind(KindMTASTS, t0.Add(2*time.Hour), 10)
	if len(due) != 1 || due[0].Domain != "m1.test" || !next.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("DueKind = %v, next %v", due, next)
	}
	if due, next := c.DueKind(KindMTASTS, t0.Add(5*time.Hour), 1); len(due) != 1 || !next.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("DueKind limit 1 = %v, next %v", due, next)
	}
	if due, next := c.DueKind(KindProbe, t0.Add(5*time.Hour), 10); len(due) != 0 || !next.IsZero() {
		t.Fatalf("DueKind of an empty kind = %v, %v", due, next)
	}
	if due, _ := c.DueKind(KindDANE, t0.Add(time.Minute), 10); len(due) != 1 || due[0].Domain != "d1.test" {
		t.Fatalf("DueKind dane = %v", due)
	}
}

func TestSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.json")
	c, _ := New(Options{Path: path})
	_ = c.Put(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	_ = c.Put(rec(KindMTASTS, "old.test", time.Hour, 2*time.Hour))
	if !c.Changed() {
		t.Fatal("Changed false after Put")
	}
	if err := c.Save(); err != nil || c.Changed() {
		t.Fatalf("Save: %v, Changed %v", err, c.Changed())
	}
	d, _ := New(Options{Path: path})
	rep, err := d.Load(t0.Add(3 * time.Hour)) // old.test has expired by then
	if err != nil || rep.Records != 1 || rep.Corrupt != nil || rep.Upgraded != "" {
		t.Fatalf("Load = %+v, %v", rep, err)
	}
	r := d.Get(KindMTASTS, "a.test")
	if r == nil || r.MTASTS.Policy.MX[0] != "mx.a.test" || !r.Expires.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("loaded %+v", r)
	}
	// An expired DANE record the scheduler keeps (its refresh ahead) is
	// restored; one whose refresh has passed is not.
	e, _ := New(Options{Path: path})
	kept := &Record{Kind: KindDANE, Domain: "kept.test", Expires: t0, Refresh: t0.Add(48 * time.Hour)}
	gone := &Record{Kind: KindDANE, Domain: "gone.test", Expires: t0, Refresh: t0}
	_ = e.Put(kept)
	_ = e.Put(gone)
	if err := e.Save(); err != nil {
		t.Fatal(err)
	}
	g, _ := New(Options{Path: path})
	if rep, err := g.Load(t0.Add(time.Hour)); err != nil || rep.Records != 1 || g.Get(KindDANE, "kept.test") == nil {
		t.Fatalf("kept DANE record: %+v, %v", rep, err)
	}
	// A missing file is fine.
	f, _ := New(Options{Path: filepath.Join(t.TempDir(), "none.json")})
	if rep, err := f.Load(t0); err != nil || rep.Records != 0 {
		t.Fatalf("missing snapshot: %+v, %v", rep, err)
	}
	// No temporary file is left behind.
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp*")); len(m) != 0 {
		t.Fatalf("left %v", m)
	}
}

// A damaged snapshot is kept aside, what parses is restored, and the next
// Save writes the salvaged records.
func TestSnapshotCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.json")
	good, _ := json.Marshal(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	for name, body := range map[string]string{
		"torn":           `{"version":2,"records":[` + string(good) + `,{"kind":`,
		"invalid record": `{"version":2,"records":[` + string(good) + `,{"kind":"mta-sts","domain":"b.test"},{"kind":"nonsense","domain":"c.test"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			c, _ := New(Options{Path: path})
			rep, err := c.Load(t0)
			if err != nil || rep.Records != 1 || rep.Corrupt == nil || rep.Corrupt.Salvaged != 1 || c.Get(KindMTASTS, "a.test") == nil {
				t.Fatalf("Load = %+v, %v", rep, err)
			}
			aside, err := os.ReadFile(rep.Corrupt.Aside)
			if err != nil || string(aside) != body {
				t.Fatalf("kept aside %q: %q, %v", rep.Corrupt.Aside, aside, err)
			}
			if !c.Changed() || c.Save() != nil {
				t.Fatal("salvaged records not saved")
			}
			d, _ := New(Options{Path: path})
			if rep, err := d.Load(t0); err != nil || rep.Records != 1 || rep.Corrupt != nil {
				t.Fatalf("reload = %+v, %v", rep, err)
			}
		})
	}
	// An unknown version loads nothing and is kept aside, never misread.
	if err := os.WriteFile(path, []byte(`{"version":9,"records":[`+string(good)+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := New(Options{Path: path})
	if rep, err := c.Load(t0); err != nil || rep.Records != 0 || rep.Corrupt == nil || rep.Corrupt.Lost != 1 {
		t.Fatalf("unknown version: %+v, %v", rep, err)
	}
}

// A version 1 source cache is read, and the first Save keeps it as
// PATH.v1; Import merges another file, the later fetch winning.
func TestSnapshotUpgradeAndImport(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.json")
	r := rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour)
	v1, _ := json.Marshal(map[string]any{"version": 1, "records": []*Record{r}})
	if err := os.WriteFile(path, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := New(Options{Path: path})
	rep, err := c.Load(t0)
	if err != nil || rep.Records != 1 || rep.Upgraded != "source cache version 1" || !c.Changed() {
		t.Fatalf("Load v1 = %+v, %v", rep, err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path + ".v1"); err != nil || string(b) != string(v1) {
		t.Fatalf("old file not kept as .v1: %q, %v", b, err)
	}
	// A save that fails leaves the old file in place: a restart still
	// finds the records.
	dir2 := t.TempDir()
	path2 := filepath.Join(dir2, "cache.json")
	if err := os.WriteFile(path2, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	e, _ := New(Options{Path: path2})
	if _, err := e.Load(t0); err != nil {
		t.Fatal(err)
	}
	_ = e.Put(&Record{Kind: KindProbe, Domain: "bad.test", Probe: &probe.Result{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}})
	if err := e.Save(); err == nil {
		t.Fatal("a record JSON cannot encode was saved")
	}
	if b, err := os.ReadFile(path2); err != nil || string(b) != string(v1) {
		t.Fatalf("the old file is gone after a failed save: %q, %v", b, err)
	}
	other := filepath.Join(dir, "sources.json")
	newer := rec(KindMTASTS, "a.test", time.Hour, 48*time.Hour)
	newer.Fetched = t0.Add(time.Minute)
	older := rec(KindDANE, "b.test", time.Hour, 24*time.Hour)
	b, _ := json.Marshal(map[string]any{"version": 1, "records": []*Record{newer, older}})
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Import(other, t0); err != nil || n != 2 || !c.Get(KindMTASTS, "a.test").Expires.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("Import = %d, %v", n, err)
	}
	if n, err := c.Import(other, t0); err != nil || n != 0 {
		t.Fatalf("second Import = %d, %v (nothing newer)", n, err)
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
	if rep, err := d.Load(t0); rep.Records != 1 || err != nil {
		t.Fatalf("Load = %+v, %v", rep, err)
	}
	if changes != 1 {
		t.Fatalf("OnChange called %d times, want once (the Put)", changes)
	}
}
