package probe

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
	"sync/atomic"
	"testing"
	"time"
)

// clock is a test clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// events collects cache events.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }
func (e *events) kinds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k []string
	for _, ev := range e.all {
		k = append(k, ev.Kind)
	}
	return k
}
func (e *events) last() Event { e.mu.Lock(); defer e.mu.Unlock(); return e.all[len(e.all)-1] }

// synthetic builds a judged result for domain at time at.
func synthetic(domain string, at time.Time, starttls bool) *Result {
	a := AddrResult{Addr: "192.0.2.1", Port: 25, Reached: true, STARTTLS: starttls}
	if starttls {
		a.TLS = &TLSInfo{Version: "TLSv1.3", Trusted: true, Verify: Check{OK: true}, Secure: Check{OK: true}}
	}
	r := &Result{Target: domain, NextHop: domain, Port: 25, Time: at,
		MX: []MXResult{{Host: "mx1." + domain, Preference: 10, Addrs: []AddrResult{a}}}}
	r.Judge()
	return r
}

func TestLearnedSTRIPTLS(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	var ev events
	c := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})

	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned before any probe")
	}
	// A probe without STARTTLS teaches nothing.
	c.Put(synthetic("lawfirm.example", t0, false))
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("learned from a probe without STARTTLS")
	}
	// STARTTLS everywhere: learned.
	clk.Add(time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), true))
	lvl, why, ok := c.Learned("LawFirm.Example.")
	if !ok || lvl != LevelEncrypt || !strings.Contains(why, "every reachable MX offered STARTTLS") {
		t.Fatalf("Learned = %q %q %v, want encrypt", lvl, why, ok)
	}
	confirmed := clk.Now()

	// 10 days later STARTTLS is gone: no downgrade, an event instead.
	clk.Add(10 * 24 * time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	lvl, why, ok = c.Learned("lawfirm.example")
	if !ok || lvl != LevelEncrypt {
		t.Fatalf("downgraded after a STRIPTLS-looking probe: %q %q %v", lvl, why, ok)
	}
	if !strings.Contains(why, "STRIPTLS") || !strings.Contains(why, "no STARTTLS offered") {
		t.Errorf("why does not explain the kept policy: %q", why)
	}
	if k := ev.kinds(); len(k) != 2 || k[0] != EventLearned || k[1] != EventDowngradeRefused {
		t.Fatalf("events = %v, want [learned learned-downgrade-refused]", k)
	}
	e := ev.last()
	if e.Target != "lawfirm.example" || !strings.Contains(e.Reason, "mx1.lawfirm.example[192.0.2.1]: no STARTTLS offered") ||
		!strings.Contains(e.Reason, confirmed.Add(DefaultLearnMaxAge).UTC().Format(time.RFC3339)) {
		t.Errorf("event = %+v", e)
	}
	// Temporary failures change nothing either.
	tmp := &Result{Target: "lawfirm.example", Time: clk.Now(), Status: StatusTemporary, Reason: "SERVFAIL"}
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
	if k := ev.kinds(); k[len(k)-1] != EventUnlearned {
		t.Errorf("events = %v, want a final unlearned", k)
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

// TestSetLearnMaxAge: a new learn_max_age (a table reload) decides the
// un-learning of domains learned before it, and <= 0 restores the default.
func TestSetLearnMaxAge(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	var ev events
	c := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	if got := c.LearnMaxAge(); got != DefaultLearnMaxAge {
		t.Fatalf("LearnMaxAge = %v, want the default %v", got, DefaultLearnMaxAge)
	}
	c.Put(synthetic("lawfirm.example", t0, true))
	clk.Add(10 * 24 * time.Hour)
	if _, _, ok := c.Learned("lawfirm.example"); !ok {
		t.Fatal("not learned 10 days after confirmation under the default 720h")
	}

	c.SetLearnMaxAge(48 * time.Hour)
	if _, _, ok := c.Learned("lawfirm.example"); ok {
		t.Fatal("still learned 10 days after confirmation with learn_max_age 48h")
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
	if k := ev.kinds(); k[len(k)-1] != EventDowngradeRefused {
		t.Fatalf("events = %v, want a final learned-downgrade-refused", k)
	}
	c.SetLearnMaxAge(24 * time.Hour)
	c.Put(synthetic("lawfirm.example", clk.Now(), false))
	if e := ev.last(); e.Kind != EventUnlearned || !strings.Contains(e.Reason, "more than learn_max_age 24h0m0s ago") {
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
	c := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
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
}

func TestLearnedOnlyBareDomains(t *testing.T) {
	now := time.Now()
	c := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
	for _, target := range []string{"[mx.example]", "example.com:587", "[mx.example]:25"} {
		c.Put(synthetic(target, now, true))
		if _, _, ok := c.Learned(target); ok {
			t.Errorf("Learned(%q) answered for a non-domain key", target)
		}
	}
	if _, _, ok := c.Learned("bad..domain"); ok {
		t.Error("Learned accepted a malformed domain")
	}
}

func TestCachePersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "probes.json")
	now := time.Now().UTC().Truncate(time.Second)
	c := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
	c.Load(path) // missing: fine
	c.Put(synthetic("a.example", now, true))
	c.Put(synthetic("b.example", now, false))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files after Save, want only probes.json (temp files left?)", len(entries))
	}

	d := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
	d.Load(path)
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

func TestCacheCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":   "\x00\x01 not json",
		"truncated": `{"version":1,"entries":[{"last_used":"2026-01-01T00:00:00Z","result":{"target":"a.exa`,
		"version":   `{"version":99,"entries":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			c := NewCache(CacheConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			c.Load(path) // must not panic or fail
			if c.Len() != 0 {
				t.Errorf("corrupt file gave %d results", c.Len())
			}
			if !strings.Contains(logs.String(), "probe cache corrupt") {
				t.Errorf("corrupt file not logged: %q", logs.String())
			}
			// The damaged file is kept aside, not overwritten.
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("corrupt file kept aside as %v, want one PATH.corrupt-<time>", aside)
			}
			if b, err := os.ReadFile(aside[0]); err != nil || string(b) != content {
				t.Errorf("%s holds %q, %v; want the original", aside[0], b, err)
			}
			if c.Corrupted() != 1 {
				t.Errorf("Corrupted() = %d, want 1", c.Corrupted())
			}
			// The cache works and its next save replaces the file.
			c.Put(synthetic("a.example", time.Now(), true))
			if err := c.Save(); err != nil {
				t.Fatal(err)
			}
			d := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
			d.Load(path)
			if d.Len() != 1 {
				t.Errorf("after save: %d results, want 1", d.Len())
			}
		})
	}
	// Records that do not validate are skipped, the rest is kept.
	path := filepath.Join(dir, "partial.json")
	os.WriteFile(path, []byte(`{"version":1,"entries":[
		{"result":{"target":"Bad Target","time":"2026-01-01T00:00:00Z"}},
		{"result":null},
		{"result":{"target":"ok.example","time":"2026-01-01T00:00:00Z","status":"ok"}}],
		"learned":[{"domain":"x..y","last_confirmed":"2026-01-01T00:00:00Z"}]}`), 0o600)
	c := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
	c.Load(path)
	if c.Len() != 1 {
		t.Errorf("partial file: %d results, want 1", c.Len())
	}
}

// countingProbe is a Func that records its calls and returns
// synthetic results stamped with the cache clock.
type countingProbe struct {
	clk   *clock
	mu    sync.Mutex
	calls map[string]int
	gate  chan struct{} // if set, each probe waits for it
}

func (p *countingProbe) probe(ctx context.Context, target string) (*Result, error) {
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheScheduleAndRefresh(t *testing.T) {
	clk := newClock(time.Now())
	cp := &countingProbe{clk: clk, calls: map[string]int{}, gate: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "probes.json")
	c := NewCache(CacheConfig{Probe: cp.probe, Path: path, Now: clk.Now, ScanEvery: 10 * time.Millisecond,
		SaveEvery: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})

	// A miss schedules one probe; repeated misses and Schedules dedupe.
	if _, ok := c.Get("Fresh.Example"); ok {
		t.Fatal("hit in an empty cache")
	}
	for range 5 {
		c.Get("fresh.example")
		c.Schedule("fresh.example.")
		c.Learned("fresh.example")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	// Lookups never wait for the (blocked) probe.
	start := time.Now()
	for range 100 {
		c.Get("fresh.example")
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("Get waited %v while a probe was in flight", el)
	}
	close(cp.gate)
	waitFor(t, "first probe", func() bool { _, ok := c.Get("fresh.example"); return ok })
	if n := cp.count("fresh.example"); n != 1 {
		t.Errorf("probed %d times, want 1", n)
	}
	// Shortly before expiry (90% of the TTL) Run re-probes it.
	clk.Add(DefaultTTL * 95 / 100)
	waitFor(t, "refresh", func() bool { return cp.count("fresh.example") == 2 })
	r, _ := c.Get("fresh.example")
	if !r.Fresh(clk.Now()) {
		t.Error("refreshed result is not fresh")
	}
	// Persisted by Run.
	waitFor(t, "save", func() bool { _, err := os.Stat(path); return err == nil })

	// An entry nobody asks for is dropped once expired, not refreshed.
	clk.Add(DefaultIdleAfter + DefaultTTL)
	waitFor(t, "idle drop", func() bool { return c.Len() == 0 })
	if n := cp.count("fresh.example"); n > 3 {
		t.Errorf("idle entry refreshed %d times", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestCacheQueueCap(t *testing.T) {
	c := NewCache(CacheConfig{MaxQueue: 3, Logger: slog.New(slog.DiscardHandler)})
	for _, d := range []string{"a.example", "b.example", "c.example", "d.example"} {
		c.Schedule(d)
	}
	if len(c.queue) != 3 {
		t.Errorf("queue holds %d, want 3", len(c.queue))
	}
}

// End to end: a real prober behind the cache; the fake MX loses STARTTLS
// between two probes and the learned policy stays, with an event.
func TestCacheWithProberSTRIPTLS(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "striptls.test", 10, "mx1.striptls.test", "127.0.0.2")
	stopTLS := f.GoodMX(t, "127.0.0.2", time.Time{}, "mx1.striptls.test")
	p := testProber(t, z, f, nil)
	clk := newClock(time.Now())
	var ev events
	c := NewCache(CacheConfig{Probe: p.Probe, Now: clk.Now, OnEvent: ev.add, ScanEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)

	if _, _, ok := c.Learned("striptls.test"); ok {
		t.Fatal("learned before probing")
	}
	waitFor(t, "learning", func() bool { _, _, ok := c.Learned("striptls.test"); return ok })

	// The attacker strips STARTTLS.
	stopTLS()
	f.PlainMX(t, "127.0.0.2")
	clk.Add(DefaultTTL)
	waitFor(t, "no-starttls probe", func() bool {
		r, ok := c.Get("striptls.test")
		return ok && r.Status == StatusNoSTARTTLS
	})
	if lvl, _, ok := c.Learned("striptls.test"); !ok || lvl != LevelEncrypt {
		t.Fatalf("learned policy downgraded by a STRIPTLS probe")
	}
	waitFor(t, "event", func() bool { k := ev.kinds(); return len(k) >= 2 })
	if k := ev.kinds(); k[0] != EventLearned || k[1] != EventDowngradeRefused {
		t.Errorf("events = %v", k)
	}
}

// TestCacheLoadSkipsBadRecords: one malformed record (a type error in one
// result, a bad learned record, …) costs that record only: the learned
// records beside it survive Load and the next Save, and the skipped one is
// logged with its key.
func TestCacheLoadSkipsBadRecords(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	good, err := json.Marshal(cacheEntry{LastUsed: now, Result: synthetic("ok.example", now, true)})
	if err != nil {
		t.Fatal(err)
	}
	stamp := `"` + now.Format(time.RFC3339) + `"`
	learned := `{"domain":"lawfirm.example","first_learned":` + stamp + `,"last_confirmed":` + stamp + `}`
	tests := []struct {
		name    string
		entry   string // a bad entry, or ""
		learned string // a bad learned record, or ""
		logKey  string // the key the skip line names
	}{
		{name: "type error in a result",
			entry:  `{"last_used":` + stamp + `,"result":{"target":"bad.example","time":` + stamp + `,"duration_ns":"oops"}}`,
			logKey: "bad.example"},
		{name: "type error in a nested address",
			entry:  `{"result":{"target":"nested.example","time":` + stamp + `,"mx":[{"host":"mx","addrs":[{"port":"25"}]}]}}`,
			logKey: "nested.example"},
		{name: "entry not an object", entry: `"oops"`},
		{name: "result not an object", entry: `{"result":[1,2]}`},
		{name: "result without time", entry: `{"result":{"target":"notime.example"}}`, logKey: "notime.example"},
		{name: "type error in a learned record",
			learned: `{"domain":"other.example","first_learned":` + stamp + `,"last_confirmed":5}`,
			logKey:  "other.example"},
		{name: "learned record not an object", learned: `17`},
		{name: "learned record with a bad domain",
			learned: `{"domain":"x..y","last_confirmed":` + stamp + `}`, logKey: "x..y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries := []string{string(good)}
			if tc.entry != "" {
				entries = []string{tc.entry, string(good)}
			}
			learnedRecs := []string{learned}
			if tc.learned != "" {
				learnedRecs = []string{tc.learned, learned}
			}
			path := filepath.Join(t.TempDir(), "probes.json")
			file := `{"version":1,"saved":` + stamp + `,"entries":[` + strings.Join(entries, ",") +
				`],"learned":[` + strings.Join(learnedRecs, ",") + `]}`
			if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			c := NewCache(CacheConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			c.Load(path)
			if _, _, ok := c.Learned("lawfirm.example"); !ok {
				t.Fatalf("learned record lost to a bad record beside it; log:\n%s", logs.String())
			}
			if r, ok := c.Get("ok.example"); !ok || r.Status != StatusOK || c.Len() != 1 {
				t.Errorf("good result not kept alone: %v %+v, %d results", ok, r, c.Len())
			}
			if !strings.Contains(logs.String(), "invalid record skipped") ||
				!strings.Contains(logs.String(), "key="+tc.logKey) || !strings.Contains(logs.String(), "skipped=1") {
				t.Errorf("skip not logged with key %q:\n%s", tc.logKey, logs.String())
			}
			// The next Save writes the learned record back.
			if err := c.Save(); err != nil {
				t.Fatal(err)
			}
			d := NewCache(CacheConfig{Logger: slog.New(slog.DiscardHandler)})
			d.Load(path)
			if _, _, ok := d.Learned("lawfirm.example"); !ok {
				t.Error("learned record missing from the file the next Save wrote")
			}
			if d.Len() != 1 {
				t.Errorf("%d results after Save and Load, want 1", d.Len())
			}
		})
	}
}

// TestLearnedEviction: at MaxEntries learned records, a newly learned
// domain makes room by dropping the record confirmed least recently. A
// lapsed record goes first and silently; one still in force (within
// learn_max_age) is dropped with an EventLearnedEvicted, for a flood of
// newly learned domains must not undo a learned encrypt unnoticed.
// Results have a cap of their own: dropping them never drops a learned
// record.
func TestLearnedEviction(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		// run fills a cache of MaxEntries 3 and returns the domain whose
		// learned record must be gone ("" for none).
		run     func(c *Cache, clk *clock) (gone string)
		evicted string // target of the EventLearnedEvicted, "" for none
	}{
		{
			name: "flood evicts a record in force, with an event",
			run: func(c *Cache, clk *clock) string {
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
			run: func(c *Cache, clk *clock) string {
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
			run: func(c *Cache, clk *clock) string {
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
			clk := newClock(t0)
			var ev events
			c := NewCache(CacheConfig{MaxEntries: 3, Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
			gone := tc.run(c, clk)
			if gone != "" {
				if _, _, ok := c.Learned(gone); ok {
					t.Errorf("%s still learned", gone)
				}
			}
			if n := len(c.learned); n > 3 {
				t.Errorf("%d learned records, cap 3", n)
			}
			if _, _, ok := c.Learned("bank.example"); ok != (gone != "bank.example") {
				t.Errorf("bank.example learned = %v", ok)
			}
			var got []Event
			for _, e := range ev.all {
				if e.Kind == EventLearnedEvicted {
					got = append(got, e)
				}
			}
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
				"STARTTLS last confirmed " + t0.Format(time.RFC3339), "until " + t0.Add(DefaultLearnMaxAge).Format(time.RFC3339),
				"explicit outbound entry"} {
				if !strings.Contains(got[0].Reason, s) {
					t.Errorf("reason %q lacks %q", got[0].Reason, s)
				}
			}
			// The event that made room comes after the one that learned.
			if k := ev.kinds(); k[len(k)-2] != EventLearned || k[len(k)-1] != EventLearnedEvicted {
				t.Errorf("events = %v, want learned then %s last", k, EventLearnedEvicted)
			}
		})
	}
}

// TestLoadEvictsLearnedWithEvent: a cache file with more learned records
// than MaxEntries (written under a higher cap) loses the least recently
// confirmed ones, and those still in force are events.
func TestLoadEvictsLearnedWithEvent(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	path := filepath.Join(t.TempDir(), "probes.json")
	big := NewCache(CacheConfig{Path: path, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	big.Put(synthetic("lapsed.example", clk.Now(), true))
	clk.Add(DefaultLearnMaxAge + time.Hour)
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		big.Put(synthetic(d, clk.Now(), true))
		clk.Add(time.Hour)
	}
	if err := big.Save(); err != nil {
		t.Fatal(err)
	}
	var ev events
	small := NewCache(CacheConfig{MaxEntries: 2, Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	small.Load(path)
	if k := ev.kinds(); len(k) != 1 || k[0] != EventLearnedEvicted || ev.last().Target != "a.example" {
		t.Fatalf("events %+v, want one %s for a.example (lapsed.example silently)", ev.all, EventLearnedEvicted)
	}
	for d, want := range map[string]bool{"lapsed.example": false, "a.example": false, "b.example": true, "c.example": true} {
		if _, _, ok := small.Learned(d); ok != want {
			t.Errorf("%s learned = %v, want %v", d, ok, want)
		}
	}
}
