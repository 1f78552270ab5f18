package srccache

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

func TestMergeLearnedOldestFirstSeenWins(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: func() time.Time { return now }})
	var shared []probe.LearnedRecord
	c.SetShared(Shared{OnLearned: func(r probe.LearnedRecord) { shared = append(shared, r) }})

	// A local probe learns the domain at now-1h.
	c.Put(synthetic("bank.example", now.Add(-time.Hour), true))
	if len(shared) != 1 || !shared[0].FirstLearned.Equal(now.Add(-time.Hour)) {
		t.Fatalf("local learning shared %+v; want one record first learned at now-1h", shared)
	}
	// Another node learned it earlier and confirmed it later.
	merged, changed, news := c.MergeLearned(probe.LearnedRecord{Domain: "bank.example",
		FirstLearned: now.Add(-48 * time.Hour), LastConfirmed: now.Add(-time.Minute)})
	if news {
		t.Error("the merge of an older, fresher record says more than it: nothing new for the fleet")
	}
	if !changed || !merged.FirstLearned.Equal(now.Add(-48*time.Hour)) || !merged.LastConfirmed.Equal(now.Add(-time.Minute)) {
		t.Fatalf("merged %+v changed=%v; want first learned 48h ago, confirmed a minute ago", merged, changed)
	}
	if r := c.c.Get(KindLearned, "bank.example"); r == nil || !r.Expires.Equal(now.Add(-time.Minute).Add(DefaultLearnMaxAge)) {
		t.Errorf("merged record %+v, want it expiring learn_max_age after the merged confirmation", r)
	}
	// The same record again, its times in another location, changes
	// nothing and is no news (no ping-pong in the fleet).
	again := merged
	again.FirstLearned, again.LastConfirmed = again.FirstLearned.Local(), again.LastConfirmed.In(time.FixedZone("X", 3600))
	if _, changed, news := c.MergeLearned(again); changed || news {
		t.Errorf("merging an equal record: changed=%v news=%v", changed, news)
	}
	// A newer first-seen time never replaces an older one, and the fleet
	// hears the older one back.
	m, _, news := c.MergeLearned(probe.LearnedRecord{Domain: "bank.example", FirstLearned: now.Add(-time.Minute), LastConfirmed: now.Add(-time.Minute)})
	if !m.FirstLearned.Equal(now.Add(-48*time.Hour)) || !news {
		t.Errorf("first learned became %v (news=%v)", m.FirstLearned, news)
	}
	if _, _, ok := c.Learned("bank.example"); !ok {
		t.Error("merged domain not answered as learned")
	}

	// From a node only: answered here too.
	c.MergeLearned(probe.LearnedRecord{Domain: "other.example", FirstLearned: now.Add(-time.Hour), LastConfirmed: now.Add(-time.Hour)})
	if lvl, _, ok := c.Learned("other.example"); !ok || lvl != probe.LevelEncrypt {
		t.Error("a record learned by another node is not answered")
	}
	// Lapsed, future and malformed records are refused.
	for _, r := range []probe.LearnedRecord{
		{Domain: "lapsed.example", FirstLearned: now.Add(-2000 * time.Hour), LastConfirmed: now.Add(-1000 * time.Hour)},
		{Domain: "future.example", FirstLearned: now, LastConfirmed: now.Add(time.Hour)},
		{Domain: "nofirst.example", LastConfirmed: now},
		{Domain: "BAD..example", FirstLearned: now, LastConfirmed: now},
	} {
		if _, changed, _ := c.MergeLearned(r); changed {
			t.Errorf("MergeLearned(%+v) accepted", r)
		}
	}
	// learn: off records nothing, from the fleet either.
	c.SetLearning(false)
	if _, changed, _ := c.MergeLearned(probe.LearnedRecord{Domain: "off.example", FirstLearned: now, LastConfirmed: now}); changed {
		t.Error("learning off, yet a shared record was recorded")
	}
}

// TestMergeLearnedEvictsWithEvent: a shared record past the bound evicts
// the least recently confirmed one, with an event when it was in force.
func TestMergeLearnedEvictsWithEvent(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var ev evlog
	c := newProbes(t, Options{}, 1, ProbesOptions{Now: func() time.Time { return now }, OnEvent: ev.add})
	c.Put(synthetic("local.example", now.Add(-time.Hour), true))
	c.MergeLearned(probe.LearnedRecord{Domain: "peer.example", FirstLearned: now, LastConfirmed: now})
	if got := ev.of(probe.EventLearnedEvicted); len(got) != 1 || got[0].Target != "local.example" {
		t.Errorf("eviction events %+v, want one for local.example", got)
	}
}

func TestPutSharedKeepsNewer(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: func() time.Time { return now }})
	r := &probe.Result{Target: "bank.example", Time: now.Add(-time.Minute), Expires: now.Add(time.Hour), Status: probe.StatusNoSTARTTLS}
	if !c.PutShared(r) {
		t.Fatal("shared result not stored")
	}
	if got, ok := c.Get("bank.example"); !ok || got.Status != probe.StatusNoSTARTTLS {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	if _, _, ok := c.Learned("bank.example"); ok {
		t.Error("a shared result taught a learned policy")
	}
	older := *r
	older.Time, older.Status = now.Add(-time.Hour), probe.StatusOK
	if c.PutShared(&older) {
		t.Error("an older shared result replaced a newer one")
	}
	expired := *r
	expired.Time, expired.Expires = now, now.Add(-time.Second)
	if c.PutShared(&expired) {
		t.Error("an expired shared result was stored")
	}
	long := *r
	long.Time, long.Expires = now, now.Add(100*probe.DefaultTTL)
	if !c.PutShared(&long) {
		t.Fatal("a newer shared result was not stored")
	}
	if got, _ := c.Get("bank.example"); !got.Expires.Equal(now.Add(probe.DefaultTTL)) {
		t.Errorf("shared result expires %v, want it capped at this cache's TTL", got.Expires)
	}
}

// TestPutSharedFromFutureRefused: a peer's result dated ahead of this
// clock (a peer's clock wrong, or a bad record) is refused, as
// MergeLearned refuses a learned record from the future: stored, it
// would outrank every later result shared and stay fresh past its TTL,
// so this daemon would not probe the target, nor confirm its learned
// policy, until then.
func TestPutSharedFromFutureRefused(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: func() time.Time { return now }})
	ahead := now.Add(30 * 24 * time.Hour)
	if c.PutShared(&probe.Result{Target: "bank.example", Time: ahead, Expires: ahead.Add(time.Hour), Status: probe.StatusNoSTARTTLS}) {
		t.Error("a result dated 30 days ahead was stored")
	}
	if c.PutShared(&probe.Result{Target: "skew.example", Time: now.Add(30 * time.Second), Expires: now.Add(time.Hour), Status: probe.StatusOK}) == false {
		t.Error("a result 30 s ahead (clock skew) was refused")
	}
}

// TestSharedUnencodableRefused: a peer's result or learned record with a
// time JSON cannot write (past the year 9999) is refused: stored, it would
// make every later Save of the cache fail.
func TestSharedUnencodableRefused(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "probes.json")
	c := newProbes(t, Options{Path: path}, 0, ProbesOptions{Now: func() time.Time { return now }})
	far := time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &probe.Result{Target: "bank.example", Time: far, Expires: far.Add(time.Hour), Status: probe.StatusOK}
	if c.PutShared(r) {
		t.Error("a result dated year 10001 was stored")
	}
	rec := probe.LearnedRecord{Domain: "bank.example", FirstLearned: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), LastConfirmed: now}
	if _, changed, _ := c.MergeLearned(rec); changed {
		t.Error("a learned record first seen in the year -1 was stored")
	}
	if err := c.c.Save(); err != nil {
		t.Errorf("Save: %v", err)
	}
}
