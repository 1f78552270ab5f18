package srccache

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

var tLearn = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestLearnedSTRIPTLS(t *testing.T) {
	clk := newClock(tLearn)
	var ev evlog
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})

	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned before any probe")
	}
	// A probe without STARTTLS teaches nothing.
	c.Put(synthetic("lawfirm.example", tLearn, false))
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned from a probe without STARTTLS")
	}
	// STARTTLS everywhere: learned.
	clk.Add(time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), true))
	lvl, why, ok := c.Learned("LawFirm.Example.")
	if !ok || lvl != probe.LevelEncrypt || !strings.Contains(why, "every reachable MX offered STARTTLS") {
		t.Fatalf("Learned = %q %q %v, want encrypt", lvl, why, ok)
	}
	confirmed := clk.Now()

	// 10 days later STARTTLS is gone: no downgrade, an event instead.
	clk.Add(10 * 24 * time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	lvl, why, ok = c.Learned("lawfirm.example")
	if !ok || lvl != probe.LevelEncrypt {
		t.Fatalf("downgraded after a STRIPTLS-looking probe: %q %q %v", lvl, why, ok)
	}
	if !strings.Contains(why, "STRIPTLS") || !strings.Contains(why, "no STARTTLS offered") {
		t.Errorf("why does not explain the kept policy: %q", why)
	}
	if k := ev.kinds(); len(k) != 2 || k[0] != probe.EventLearned || k[1] != probe.EventDowngradeRefused {
		t.Fatalf("events = %v, want [learned learned-downgrade-refused]", k)
	}
	e := ev.last()
	if e.Target != "lawfirm.example" || !strings.Contains(e.Reason, "mx1.lawfirm.example[192.0.2.1]: no STARTTLS offered") ||
		!strings.Contains(e.Reason, confirmed.Add(DefaultLearnMaxAge).UTC().Format(time.RFC3339)) {
		t.Errorf("event = %+v", e)
	}
	// Temporary failures change nothing either.
	tmp := &probe.Result{Target: "lawfirm.example", Time: clk.Now(), Status: probe.StatusTemporary, Reason: "SERVFAIL"}
	tmp.Judge()
	c.Put(tmp)
	if _, _, ok := c.Learned("lawfirm.example"); !ok {
		t.Fatal("a temporary failure undid the learned policy")
	}

	// Past learn_max_age without confirmation the learned policy lapses…
	clk.Add(DefaultLearnMaxAge)
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned policy outlived learn_max_age")
	}
	// …and the next probe without STARTTLS forgets it.
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	if k := ev.kinds(); k[len(k)-1] != probe.EventUnlearned {
		t.Errorf("events = %v, want a final unlearned", k)
	}
	if c.c.Get(KindLearned, "lawfirm.example") != nil {
		t.Error("unlearned record still in the cache")
	}
	// Confirmation keeps a learned policy alive.
	c.Put(synthetic("bank.example", clk.Now(), true))
	for range 3 {
		clk.Add(20 * 24 * time.Hour)
		c.Put(synthetic("bank.example", clk.Now(), true))
	}
	if _, _, ok := c.Learned("bank.example"); !ok {
		t.Error("re-confirmed learned policy lapsed")
	}
}

// TestLearnedLapse: the scheduler's KindLearned handler drops a learned
// record learn_max_age after its last confirmation (an EventUnlearned),
// and a record confirmed meanwhile lives on.
func TestLearnedLapse(t *testing.T) {
	clk := newClock(time.Now())
	var ev evlog
	p, s := newScheduled(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add, LearnMaxAge: time.Hour}, true)
	p.Put(synthetic("lapse.example", clk.Now(), true))
	p.Put(synthetic("kept.example", clk.Now(), true))
	if r := p.c.Get(KindLearned, "lapse.example"); r == nil || !r.Expires.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("learned record %+v, want one expiring in learn_max_age", r)
	}
	runScheduler(t, s)
	clk.Add(50 * time.Minute)
	p.Put(synthetic("kept.example", clk.Now(), true)) // confirmed
	clk.Add(20 * time.Minute)
	waitUntil(t, "the lapse", func() bool { return p.c.Get(KindLearned, "lapse.example") == nil })
	if un := ev.of(probe.EventUnlearned); len(un) != 1 || un[0].Target != "lapse.example" || !strings.Contains(un[0].Reason, "lapsed") {
		t.Errorf("unlearned events %+v, want one for lapse.example", un)
	}
	if _, _, ok := p.Learned("kept.example"); !ok {
		t.Error("a record confirmed 20 minutes ago lapsed")
	}
}

// TestSetLearnMaxAge: a new learn_max_age (a table reload) decides the
// un-learning of domains learned before it, and <= 0 restores the default.
func TestSetLearnMaxAge(t *testing.T) {
	clk := newClock(tLearn)
	var ev evlog
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	if got := c.LearnMaxAge(); got != DefaultLearnMaxAge {
		t.Fatalf("LearnMaxAge = %v, want the default %v", got, DefaultLearnMaxAge)
	}
	c.Put(synthetic("lawfirm.example", tLearn, true))
	clk.Add(10 * 24 * time.Hour)
	if _, _, ok := c.Learned("lawfirm.example"); !ok {
		t.Fatal("not learned 10 days after confirmation under the default 720h")
	}

	c.SetLearnMaxAge(48 * time.Hour)
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("still learned 10 days after confirmation with learn_max_age 48h")
	}
	// The record's expiry (its lapse, Load's cut) follows.
	if r := c.c.Get(KindLearned, "lawfirm.example"); r == nil || !r.Expires.Equal(tLearn.Add(48*time.Hour)) {
		t.Fatalf("record after SetLearnMaxAge(48h): %+v", r)
	}
	c.SetLearnMaxAge(-time.Hour)
	if got := c.LearnMaxAge(); got != DefaultLearnMaxAge {
		t.Fatalf("SetLearnMaxAge(-1h): LearnMaxAge = %v, want the default %v", got, DefaultLearnMaxAge)
	}
	if _, _, ok := c.Learned("lawfirm.example"); !ok {
		t.Fatal("the default learn_max_age restored does not keep the learned policy")
	}

	// A probe without STARTTLS: refused under the default, forgotten
	// under a learn_max_age the confirmation is older than.
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	if k := ev.kinds(); k[len(k)-1] != probe.EventDowngradeRefused {
		t.Fatalf("events = %v, want a final learned-downgrade-refused", k)
	}
	if _, why, _ := c.Learned("lawfirm.example"); !strings.Contains(why, "kept until "+tLearn.Add(DefaultLearnMaxAge).Format(time.RFC3339)) {
		t.Errorf("why %q does not name the end under the default", why)
	}
	c.SetLearnMaxAge(480 * time.Hour) // the explanation follows too
	if _, why, _ := c.Learned("lawfirm.example"); !strings.Contains(why, "kept until "+tLearn.Add(480*time.Hour).Format(time.RFC3339)) {
		t.Errorf("why %q does not name the end under 480h", why)
	}
	c.SetLearnMaxAge(24 * time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	if e := ev.last(); e.Kind != probe.EventUnlearned || !strings.Contains(e.Reason, "more than learn_max_age 24h0m0s ago") {
		t.Fatalf("last event = %+v, want unlearned naming learn_max_age 24h0m0s", e)
	}
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned after being unlearned")
	}
}

// TestSetLearnMaxAgeConcurrent: SetLearnMaxAge runs beside lookups and
// results (go test -race).
func TestSetLearnMaxAgeConcurrent(t *testing.T) {
	now := time.Now()
	c := newProbes(t, Options{}, 0, ProbesOptions{})
	c.Put(synthetic("lawfirm.example", now, true))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			c.SetLearnMaxAge(time.Duration(i+1) * time.Hour)
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			c.Learned("lawfirm.example")
			c.Put(synthetic("lawfirm.example", now, true))
		}
	}()
	wg.Wait()
	if got := c.LearnMaxAge(); got != 200*time.Hour {
		t.Errorf("LearnMaxAge = %v, want the last one set, 200h", got)
	}
	if r := c.c.Get(KindLearned, "lawfirm.example"); r == nil || !r.Expires.Equal(now.Add(200*time.Hour)) {
		t.Errorf("record %+v, want it expiring under the last learn_max_age", r)
	}
}

func TestLearnedOnlyBareDomains(t *testing.T) {
	now := time.Now()
	c := newProbes(t, Options{}, 0, ProbesOptions{})
	for _, target := range []string{"[mx.example]", "example.com:587", "[mx.example]:25"} {
		c.Put(synthetic(target, now, true))
		if _, _, ok := c.Learned(target); ok {
			t.Errorf("Learned(%q) answered for a non-domain key", target)
		}
	}
	if n := c.c.Count(KindLearned); n != 0 {
		t.Errorf("%d learned records from non-domain keys", n)
	}
	if _, _, ok := c.Learned("bad..domain"); ok {
		t.Error("Learned accepted a malformed domain")
	}
}

// TestLearnedEviction: at its bound of learned records, a newly learned
// domain makes room by dropping the record confirmed least recently. A
// lapsed record goes first and silently; one still in force (within
// learn_max_age) is dropped with an EventLearnedEvicted, for a flood of
// newly learned domains must not undo a learned encrypt unnoticed.
// Results have a bound of their own: dropping them never drops a learned
// record.
func TestLearnedEviction(t *testing.T) {
	tests := []struct {
		name string
		// run fills a cache bounded to 3 of each kind and returns the
		// domain whose learned record must be gone ("" for none).
		run     func(t *testing.T, c *Probes, clk *clock) (gone string)
		evicted string // target of the EventLearnedEvicted, "" for none
	}{
		{
			name: "flood evicts a record in force, with an event",
			run: func(t *testing.T, c *Probes, clk *clock) string {
				for _, d := range []string{"bank.example", "b.example", "c.example", "flood1.example"} {
					c.Put(synthetic(d, clk.Now(), true))
					clk.Add(time.Hour)
				}
				return "bank.example"
			},
			evicted: "bank.example",
		},
		{
			name: "a lapsed record goes first, silently",
			run: func(t *testing.T, c *Probes, clk *clock) string {
				c.Put(synthetic("old.example", clk.Now(), true))
				clk.Add(DefaultLearnMaxAge + time.Hour)
				for _, d := range []string{"bank.example", "c.example", "flood1.example"} {
					c.Put(synthetic(d, clk.Now(), true))
					clk.Add(time.Hour)
				}
				return "old.example"
			},
		},
		{
			name: "results evicted, learned records kept",
			run: func(t *testing.T, c *Probes, clk *clock) string {
				c.Put(synthetic("bank.example", clk.Now(), true))
				for i := range 10 {
					clk.Add(time.Minute)
					c.Put(synthetic(fmt.Sprintf("plain%d.example", i), clk.Now(), false))
				}
				if _, ok := c.Get("bank.example"); ok {
					t.Error("least recently used result bank.example kept")
				}
				if c.Len() != 3 {
					t.Errorf("%d results, want 3", c.Len())
				}
				return ""
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock(tLearn)
			var ev evlog
			c := newProbes(t, Options{}, 3, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
			gone := tc.run(t, c, clk)
			if gone != "" {
				if _, _, ok := c.Learned(gone); ok {
					t.Errorf("%s still learned", gone)
				}
			}
			if n := c.c.Count(KindLearned); n > 3 {
				t.Errorf("%d learned records, bound 3", n)
			}
			if _, _, ok := c.Learned("bank.example"); ok != (gone != "bank.example") {
				t.Errorf("bank.example learned = %v", ok)
			}
			got := ev.of(probe.EventLearnedEvicted)
			if tc.evicted == "" {
				if len(got) != 0 {
					t.Errorf("eviction events %+v, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0].Target != tc.evicted {
				t.Fatalf("eviction events %+v, want one for %s", got, tc.evicted)
			}
			for _, s := range []string{"probe cache full (3 learned policies)", "before learn_max_age 720h0m0s",
				"STARTTLS last confirmed " + tLearn.Format(time.RFC3339), "until " + tLearn.Add(DefaultLearnMaxAge).Format(time.RFC3339),
				"explicit outbound entry"} {
				if !strings.Contains(got[0].Reason, s) {
					t.Errorf("reason %q lacks %q", got[0].Reason, s)
				}
			}
			// The event that made room comes after the one that learned.
			if k := ev.kinds(); k[len(k)-2] != probe.EventLearned || k[len(k)-1] != probe.EventLearnedEvicted {
				t.Errorf("events = %v, want learned then %s last", k, probe.EventLearnedEvicted)
			}
		})
	}
}

// TestLoadEvictsLearnedWithEvent: a cache file with more learned records
// than the bound (written under a higher one) loses the least recently
// confirmed ones, and those still in force are events; lapsed ones are
// not restored at all.
func TestLoadEvictsLearnedWithEvent(t *testing.T) {
	clk := newClock(tLearn)
	path := filepath.Join(t.TempDir(), "probes.json")
	big := newProbes(t, Options{Path: path}, 0, ProbesOptions{Now: clk.Now})
	big.Put(synthetic("lapsed.example", clk.Now(), true))
	clk.Add(DefaultLearnMaxAge + time.Hour)
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		big.Put(synthetic(d, clk.Now(), true))
		clk.Add(time.Hour)
	}
	if err := big.c.Save(); err != nil {
		t.Fatal(err)
	}
	var ev evlog
	small, _ := reload(t, path, 2, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	if k := ev.kinds(); len(k) != 1 || k[0] != probe.EventLearnedEvicted || ev.last().Target != "a.example" {
		t.Fatalf("events %+v, want one %s for a.example (lapsed.example silently)", ev.all, probe.EventLearnedEvicted)
	}
	for d, want := range map[string]bool{"lapsed.example": false, "a.example": false, "b.example": true, "c.example": true} {
		if _, _, ok := small.Learned(d); ok != want {
			t.Errorf("%s learned = %v, want %v", d, ok, want)
		}
	}
}

// TestSetLearningOff: while learning is off a probe showing STARTTLS
// teaches nothing and one without it contradicts nothing; turned on, only
// later probes count.
func TestSetLearningOff(t *testing.T) {
	clk := newClock(tLearn)
	var ev evlog
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	c.Put(synthetic("kept.example", tLearn, true)) // learned while on
	c.SetLearning(false)
	c.Put(synthetic("tls.example", tLearn, true))
	c.Put(synthetic("kept.example", tLearn.Add(time.Minute), false))
	if k := ev.kinds(); len(k) != 1 || k[0] != probe.EventLearned {
		t.Fatalf("events = %v, want only the learned one from before learning was off", k)
	}
	if _, _, ok := c.Learned("tls.example"); ok {
		t.Fatal("Learned answers while learning is off")
	}
	c.SetLearning(true)
	if _, _, ok := c.Learned("tls.example"); ok {
		t.Fatal("tls.example learned from a probe made while learning was off")
	}
	if _, why, ok := c.Learned("kept.example"); !ok || why == "" {
		t.Fatal("a record learned before learning was off is gone")
	} else if c.c.Get(KindLearned, "kept.example").Learned.ContradictedBy != "" {
		t.Error("a probe made while learning was off contradicted a learned record")
	}
	clk.Add(time.Hour)
	c.Put(synthetic("tls.example", clk.Now(), true))
	if _, _, ok := c.Learned("tls.example"); !ok {
		t.Error("not learned from a probe after learning was turned on")
	}
}

// TestLearnedContradictedByTLSFailure: STARTTLS offered but the handshake
// failing defers encrypt mail as surely as no STARTTLS: it is a refused
// downgrade of a learned domain too.
func TestLearnedContradictedByTLSFailure(t *testing.T) {
	clk := newClock(tLearn)
	var ev evlog
	c := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	c.Put(synthetic("tls.example", tLearn, true))
	r := synthetic("tls.example", tLearn.Add(time.Hour), true)
	a := &r.MX[0].Addrs[0]
	a.TLS, a.ErrorClass, a.Error = nil, probe.ClassHandshake, "TLS handshake after STARTTLS timed out"
	r.Status, r.Reason = "", ""
	r.Judge()
	if r.Status != probe.StatusTLSFailed {
		t.Fatalf("status %q, want %q", r.Status, probe.StatusTLSFailed)
	}
	c.Put(r)
	if k := ev.kinds(); len(k) != 2 || k[1] != probe.EventDowngradeRefused {
		t.Errorf("events = %v, want learned then learned-downgrade-refused", k)
	}
}

// TestLearnNeedsEveryAddress: a result with an MX host whose addresses are
// unknown (a temporary DNS failure, for all or part of them) neither
// learns nor confirms a learned policy, is not taken as a failure, but
// still counts as a contradiction when an address it saw lacks STARTTLS.
func TestLearnNeedsEveryAddress(t *testing.T) {
	// incomplete adds to synthetic's MX a second host whose address
	// lookup failed, wholly or for one family.
	incomplete := func(domain string, at time.Time, starttls, partial bool) *probe.Result {
		r := synthetic(domain, at, starttls)
		mx := probe.MXResult{Host: "mx2." + domain, Preference: 20, ErrorClass: probe.ClassDNSTemp,
			Error: "temporary DNS failure: mx2." + domain + " AAAA: SERVFAIL"}
		if partial {
			mx.Addrs = []probe.AddrResult{r.MX[0].Addrs[0]}
			mx.Addrs[0].Addr = "192.0.2.2"
		}
		r.MX = append(r.MX, mx)
		r.Status, r.Reason = "", ""
		r.Judge()
		return r
	}
	for _, partial := range []bool{false, true} {
		name := map[bool]string{false: "host lookup failed", true: "one family failed"}[partial]
		t.Run(name, func(t *testing.T) {
			clk := newClock(tLearn)
			var ev evlog
			c := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
			r := incomplete("part.example", clk.Now(), true, partial)
			if r.Status != probe.StatusOK {
				t.Fatalf("status %q (%s), want ok: a partial DNS failure is no failure", r.Status, r.Reason)
			}
			c.Put(r)
			if _, _, ok := c.Learned("part.example"); ok || len(ev.kinds()) != 0 {
				t.Fatalf("learned from an incomplete result (events %v)", ev.kinds())
			}
			if got, _ := c.Get("part.example"); got == nil || got.Status != probe.StatusOK {
				t.Errorf("result not kept as it is: %+v", got)
			}
			// Learned from a complete result; incomplete ones do not
			// confirm it, so it lapses on time.
			c.Put(synthetic("part.example", clk.Now(), true))
			for range 2 {
				clk.Add(DefaultLearnMaxAge / 2)
				c.Put(incomplete("part.example", clk.Now(), true, partial))
			}
			clk.Add(time.Hour)
			if _, _, ok := c.Learned("part.example"); ok {
				t.Error("incomplete results confirmed the learned policy past learn_max_age")
			}
			// An address seen without STARTTLS contradicts a learned policy.
			c.Put(synthetic("other.example", clk.Now(), true))
			clk.Add(time.Hour)
			c.Put(incomplete("other.example", clk.Now(), false, partial))
			if k := ev.kinds(); k[len(k)-1] != probe.EventDowngradeRefused {
				t.Errorf("events = %v, want a final %s", k, probe.EventDowngradeRefused)
			}
		})
	}
}
