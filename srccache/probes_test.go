package srccache

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

func TestProbesPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "probes.json")
	now := time.Now().UTC().Truncate(time.Second)
	c, rep := reload(t, path, 0, ProbesOptions{}) // missing: fine
	if rep.Records != 0 || rep.Corrupt != nil {
		t.Fatalf("missing file: %+v", rep)
	}
	c.Put(synthetic("a.example", now, true))
	c.Put(synthetic("b.example", now, false))
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files after Save, want only probes.json (temp files left?)", len(entries))
	}

	d, _ := reload(t, path, 0, ProbesOptions{})
	if d.Len() != 2 {
		t.Fatalf("loaded %d results, want 2", d.Len())
	}
	for _, target := range []string{"a.example", "b.example"} {
		want, _ := c.Get(target)
		got, ok := d.Get(target)
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if !ok || !bytes.Equal(wj, gj) {
			t.Errorf("%s after reload:\n%s\nwant\n%s", target, gj, wj)
		}
	}
	if all := d.All(); len(all) != 2 || all[0].Target != "a.example" || all[1].Target != "b.example" {
		t.Errorf("All() = %v", all)
	}
	if _, _, ok := d.Learned("a.example"); !ok {
		t.Error("learned state lost across reload")
	}
	if _, _, ok := d.Learned("b.example"); ok {
		t.Error("b.example learned from nothing")
	}
}

// countingProbe is a probe.Func that records its calls and returns
// synthetic results stamped with the test clock.
type countingProbe struct {
	clk   *clock
	mu    sync.Mutex
	calls map[string]int
	gate  chan struct{} // if set, each probe waits for it
}

func (p *countingProbe) probe(ctx context.Context, target string) (*probe.Result, error) {
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p.mu.Lock()
	p.calls[target]++
	p.mu.Unlock()
	return synthetic(target, p.clk.Now(), true), nil
}

func (p *countingProbe) count(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[target]
}

// TestProbesScheduleAndRefresh: a miss schedules one probe however many
// lookups ask, lookups never wait for it, a used result is re-probed
// shortly before it expires, the scheduler saves the cache, and a result
// nobody asks for is dropped once stale.
func TestProbesScheduleAndRefresh(t *testing.T) {
	clk := newClock(time.Now())
	cp := &countingProbe{clk: clk, calls: map[string]int{}, gate: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "probes.json")
	c, s := newScheduled(t, Options{Path: path}, 0, ProbesOptions{Probe: cp.probe, Now: clk.Now}, true)

	// A miss schedules one probe; repeated misses and Schedules dedupe.
	if _, ok := c.Get("Fresh.Example"); ok {
		t.Fatal("hit in an empty cache")
	}
	for range 5 {
		c.Get("fresh.example")
		c.Schedule("fresh.example.")
		c.Learned("fresh.example")
	}
	runScheduler(t, s)
	// Lookups never wait for the (blocked) probe.
	start := time.Now()
	for range 100 {
		c.Get("fresh.example")
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("Get waited %v while a probe was in flight", el)
	}
	close(cp.gate)
	waitUntil(t, "first probe", func() bool { _, ok := c.Get("fresh.example"); return ok })
	if n := cp.count("fresh.example"); n != 1 {
		t.Errorf("probed %d times, want 1", n)
	}
	// Shortly before expiry (90% of the TTL) it is re-probed.
	clk.Add(probe.DefaultTTL * 95 / 100)
	waitUntil(t, "refresh", func() bool { return cp.count("fresh.example") == 2 })
	waitUntil(t, "the refreshed result", func() bool { r, _ := c.Get("fresh.example"); return r.Fresh(clk.Now()) })
	// Persisted by the scheduler.
	waitUntil(t, "save", func() bool { _, err := os.Stat(path); return err == nil })

	// A result nobody asks for is dropped once stale, not refreshed.
	clk.Add(DefaultIdleAfter + probe.DefaultTTL)
	waitUntil(t, "idle drop", func() bool { return c.Len() == 0 })
	if n := cp.count("fresh.example"); n > 3 {
		t.Errorf("idle result refreshed %d times", n)
	}
	if c.lastUsedKnown("fresh.example") {
		t.Error("the dropped target's last lookup is still kept")
	}
}

// lastUsedKnown reports whether key's last lookup is kept.
func (p *Probes) lastUsedKnown(key string) bool {
	p.umu.RLock()
	defer p.umu.RUnlock()
	return p.used[key] != nil
}

// TestProbesLastUsedPersisted: a result's last lookup is written with its
// record and restored with it, so that a restart neither drops a result
// in use nor keeps refreshing an idle one.
func TestProbesLastUsedPersisted(t *testing.T) {
	clk := newClock(tLearn)
	path := filepath.Join(t.TempDir(), "probes.json")
	c := newProbes(t, Options{Path: path}, 0, ProbesOptions{Now: clk.Now})
	c.Put(synthetic("used.example", clk.Now(), true))
	clk.Add(3 * time.Hour)
	c.Get("used.example")
	c.Put(synthetic("used.example", clk.Now(), true)) // a refresh writes the lookup
	if r := c.c.Get(KindProbe, "used.example"); !r.Used.Equal(clk.Now()) || !r.Expires.Equal(clk.Now().Add(DefaultIdleAfter)) {
		t.Fatalf("record used %v, expires %v; want the last lookup and IdleAfter after it", r.Used, r.Expires)
	}
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	clk.Add(DefaultIdleAfter - time.Hour)
	d, _ := reload(t, path, 0, ProbesOptions{Now: clk.Now})
	r := d.c.Get(KindProbe, "used.example")
	if r == nil || !d.lastUsed("used.example", r).Equal(tLearn.Add(3*time.Hour)) {
		t.Fatalf("restored record %+v", r)
	}
}

// TestProbesQueueFullLogsOnce: a flood of lookups of new domains with the
// queue full gives one log line with a count, not one per lookup.
func TestProbesQueueFullLogsOnce(t *testing.T) {
	var logs bytes.Buffer
	c, s := newScheduled(t, Options{}, 0, ProbesOptions{MaxQueue: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, true)
	for i := range 500 {
		c.Schedule(fmt.Sprintf("d%d.example", i))
	}
	if n := strings.Count(logs.String(), "probe queue full"); n != 1 {
		t.Errorf("%d log lines for 499 dropped probes, want 1:\n%s", n, logs.String())
	}
	if got := s.Dropped(KindProbe); got != 499 {
		t.Errorf("%d drops counted, want 499", got)
	}
}

// End to end: a real prober behind the cache; the fake MX loses STARTTLS
// between two probes and the learned policy stays, with an event.
func TestProbesWithProberSTRIPTLS(t *testing.T) {
	z, f := probetest.NewZone(t), probetest.NewFarm(t, probetest.NewCA(t))
	z.MX(t, "striptls.test", 10, "mx1.striptls.test", "127.0.0.2")
	stopTLS := f.GoodMX(t, "127.0.0.2", time.Time{}, "mx1.striptls.test")
	p := probe.New(probe.Config{Resolver: z.Addr, Port: f.Port, Timeout: 3 * time.Second, HELO: "probe.tlspolicyd.test",
		AllowPrivate: true, Roots: f.CA.Pool, Logger: quiet})
	clk := newClock(time.Now())
	var ev evlog
	c, s := newScheduled(t, Options{}, 0, ProbesOptions{Probe: p.Probe, Now: clk.Now, OnEvent: ev.add}, true)
	runScheduler(t, s)

	if _, _, ok := c.Learned("striptls.test"); ok {
		t.Fatal("learned before probing")
	}
	waitUntil(t, "learning", func() bool { _, _, ok := c.Learned("striptls.test"); return ok })

	// The attacker strips STARTTLS.
	stopTLS()
	f.PlainMX(t, "127.0.0.2")
	clk.Add(probe.DefaultTTL)
	waitUntil(t, "no-starttls probe", func() bool {
		r, ok := c.Get("striptls.test")
		return ok && r.Status == probe.StatusNoSTARTTLS
	})
	if lvl, _, ok := c.Learned("striptls.test"); !ok || lvl != probe.LevelEncrypt {
		t.Fatalf("learned policy downgraded by a STRIPTLS probe")
	}
	waitUntil(t, "event", func() bool { k := ev.kinds(); return len(k) >= 2 })
	if k := ev.kinds(); k[0] != probe.EventLearned || k[1] != probe.EventDowngradeRefused {
		t.Errorf("events = %v", k)
	}
}

// TestProbesBounds: results and learned records are bounded apart; the
// least recently used result and the least recently confirmed learned
// record make room, and the bounds hold across Load.
func TestProbesBounds(t *testing.T) {
	clk := newClock(tLearn)
	path := filepath.Join(t.TempDir(), "probes.json")
	c := newProbes(t, Options{Path: path}, 3, ProbesOptions{Now: clk.Now})
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		c.Put(synthetic(d, clk.Now(), true))
		clk.Add(time.Minute)
	}
	c.Get("a.example") // a is now used more recently than b…
	clk.Add(time.Minute)
	c.sweep(clk.Now()) // …which its record says after the hourly sweep
	c.Put(synthetic("d.example", clk.Now(), true))
	if c.Len() != 3 {
		t.Fatalf("%d results, want 3", c.Len())
	}
	if _, ok := c.Get("b.example"); ok {
		t.Error("least recently used result b.example kept")
	}
	for _, d := range []string{"a.example", "c.example", "d.example"} {
		if _, ok := c.Get(d); !ok {
			t.Errorf("%s dropped", d)
		}
	}
	// Learned records: a was confirmed first and not since.
	if _, _, ok := c.Learned("a.example"); ok {
		t.Error("least recently confirmed learned record a.example kept")
	}
	for _, d := range []string{"b.example", "c.example", "d.example"} {
		if _, _, ok := c.Learned(d); !ok {
			t.Errorf("learned %s dropped", d)
		}
	}
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	small, _ := reload(t, path, 2, ProbesOptions{Now: clk.Now})
	if small.Len() != 2 || small.c.Count(KindLearned) != 2 {
		t.Errorf("loaded %d results and %d learned records under a bound of 2", small.Len(), small.c.Count(KindLearned))
	}
}

// TestProbesSweep: the last lookups of targets whose record is gone are
// dropped, the others kept, and a newer one is written into its record
// (its Refresh, the scheduler's, left as it is), at most once per
// sweepEvery.
func TestProbesSweep(t *testing.T) {
	clk := newClock(tLearn)
	p := newProbes(t, Options{}, 0, ProbesOptions{Now: clk.Now})
	p.Put(synthetic("kept.example", clk.Now(), true))
	p.Put(synthetic("later.example", clk.Now(), true))
	refresh := p.c.Get(KindProbe, "kept.example").Refresh
	clk.Add(30 * time.Minute)
	p.Get("kept.example")
	p.touch("gone.example", clk.Now()) // a lookup racing with the record's removal
	p.sweep(clk.Now())
	if !p.lastUsedKnown("kept.example") || p.lastUsedKnown("gone.example") {
		t.Errorf("after the sweep: kept %v, gone %v", p.lastUsedKnown("kept.example"), p.lastUsedKnown("gone.example"))
	}
	r := p.c.Get(KindProbe, "kept.example")
	if !r.Used.Equal(clk.Now()) || !r.Expires.Equal(clk.Now().Add(DefaultIdleAfter)) || !r.Refresh.Equal(refresh) {
		t.Errorf("record after the sweep: used %v, expires %v, refresh %v", r.Used, r.Expires, r.Refresh)
	}
	if r := p.c.Get(KindProbe, "later.example"); !r.Used.Equal(tLearn) {
		t.Errorf("a record not looked up since its write rewritten: used %v", r.Used)
	}
	clk.Add(time.Minute)
	p.Get("later.example")
	p.sweep(clk.Now()) // within sweepEvery: nothing
	if r := p.c.Get(KindProbe, "later.example"); !r.Used.Equal(tLearn) {
		t.Errorf("swept again within %v", sweepEvery)
	}
}

// TestProbesConcurrent: lookups, results, fleet merges, learn_max_age
// changes, the sweep and the scheduler's handlers run at once (go test
// -race), and every lookup meanwhile answers as a learned domain should.
func TestProbesConcurrent(t *testing.T) {
	clk := newClock(time.Now())
	cp := &countingProbe{clk: clk, calls: map[string]int{}}
	p, s := newScheduled(t, Options{}, 100, ProbesOptions{Probe: cp.probe, Now: clk.Now}, true)
	for i := range 10 {
		p.Put(synthetic(fmt.Sprintf("d%d.example", i), clk.Now(), true))
	}
	runScheduler(t, s)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				d := fmt.Sprintf("d%d.example", i%10)
				switch g {
				case 0:
					if _, _, ok := p.Learned(d); !ok {
						t.Errorf("%s not learned", d)
						return
					}
					p.Get(fmt.Sprintf("new%d.example", i%30))
				case 1:
					p.Put(synthetic(d, clk.Now(), true))
				case 2:
					p.MergeLearned(probe.LearnedRecord{Domain: d, FirstLearned: clk.Now().Add(-time.Hour), LastConfirmed: clk.Now()})
					p.SetLearnMaxAge(time.Duration(100+i%2) * time.Hour)
				case 3:
					p.nextSweep.Store(0)
					p.sweep(clk.Now())
					_ = p.All()
				}
			}
		}()
	}
	wg.Wait()
	if n := p.c.Count(KindProbe); n < 10 || n > 40 {
		t.Errorf("%d results, want the 10 put and at most the 30 looked up", n)
	}
}
