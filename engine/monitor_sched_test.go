package engine

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// runScheduled registers m on a scheduler over c (a new cache if nil),
// syncs it and runs the scheduler until the test ends.
func runScheduled(t *testing.T, m *Monitor, c *srccache.Cache) *srccache.Cache {
	t.Helper()
	if c == nil {
		var err error
		if c, err = srccache.New(srccache.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	s := srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: quietLogger()})
	m.Register(s, c)
	m.Sync()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

// waitCalls waits until rec has seen n probes and none is in flight.
func waitCalls(t *testing.T, rec *recorder, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		calls, _, _ := rec.snapshot()
		if len(calls) >= n && rec.inFlightNow() == 0 {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d probes within 30 s, want %d: %v", len(calls), n, calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMonitorSmallTableCheckedSoon: after start every monitored entry is
// checked once, testing entries first, spread in slots at most maxGap
// apart rather than all at once; each record then holds the verdict and a
// next check one interval (±10%) after the probe. (With the real 10 s
// maxGap a table of 12 is checked within 2 minutes; the test scales it
// down to 100 ms.)
func TestMonitorSmallTableCheckedSoon(t *testing.T) {
	w := newMonitorWorld(t, 9, 3)
	rec := &recorder{probe: w.prober.Probe}
	m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: len(w.keys), Logger: quietLogger(),
		firstDelay: 10 * time.Millisecond, maxGap: 100 * time.Millisecond}
	c := runScheduled(t, m, nil)
	calls := waitCalls(t, rec, len(w.keys))
	_, starts, _ := rec.snapshot()
	n := counts(calls)
	for _, k := range w.keys {
		if n[k] != 1 {
			t.Errorf("%s probed %d times, want 1", k, n[k])
		}
	}
	for i, k := range calls[:3] {
		if !strings.HasPrefix(k, "t") {
			t.Errorf("probe %d was %s, want the testing entries first: %v", i, k, calls)
		}
	}
	// 12 slots of 100 ms: the last probe starts at least 10 slots (1 s)
	// after the first. All at once would take milliseconds.
	if spread := starts[len(starts)-1].Sub(starts[0]); spread < 500*time.Millisecond {
		t.Errorf("first to last probe in %v: not spread", spread)
	}
	if got := c.Count(srccache.KindWatch); got != len(w.keys) {
		t.Errorf("%d watch records, want %d", got, len(w.keys))
	}
	for _, k := range w.keys {
		r := c.Get(srccache.KindWatch, "outbound:"+k)
		if r == nil || r.Watch == nil {
			t.Fatalf("%s: no watch record", k)
		}
		if r.Watch.Status != "ok" || r.Watch.Defer != "" || r.Error != "" || r.Watch.Policy != "encrypt" || r.Watch.Testing != strings.HasPrefix(k, "t") {
			t.Errorf("%s: record %+v, watch %+v", k, r, r.Watch)
		}
		if d := r.Refresh.Sub(r.Watch.Probed); d < 54*time.Minute || d > 66*time.Minute {
			t.Errorf("%s: next check %v after the probe, want 1h ±10%%", k, d)
		}
	}
}

// TestMonitorChecksEveryInterval: on the scheduler each key is checked
// again every interval (±10%), never sooner.
func TestMonitorChecksEveryInterval(t *testing.T) {
	w := newMonitorWorld(t, 4, 2)
	rec := &recorder{probe: w.prober.Probe}
	interval := 1500 * time.Millisecond
	m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: len(w.keys), Interval: interval, Logger: quietLogger(),
		firstDelay: 10 * time.Millisecond, maxGap: 50 * time.Millisecond}
	runScheduled(t, m, nil)
	calls := waitCalls(t, rec, 3*len(w.keys))
	_, starts, _ := rec.snapshot()
	last := map[string]time.Time{}
	for i, k := range calls {
		if at, ok := last[k]; ok {
			// The next check is due 0.9 interval after the probe's
			// start at the earliest; the recorder sees the start a
			// little after the monitor's clock does.
			if d := starts[i].Sub(at); d < 9*interval/10-50*time.Millisecond {
				t.Errorf("%s probed again after %v, want at least 0.9 × %v", k, d, interval)
			}
		}
		last[k] = starts[i]
	}
	for _, k := range w.keys {
		if counts(calls)[k] < 2 {
			t.Errorf("%s probed %d times in %d probes", k, counts(calls)[k], len(calls))
		}
	}
}

// TestMonitorRateCap: restored records all overdue (the first Sync is
// skipped here, so nothing spreads them) are started at most
// MaxPerMinute a minute by the scheduler; the summary warns that checks
// are behind.
func TestMonitorRateCap(t *testing.T) {
	w := newMonitorWorld(t, 20, 0)
	rec := &recorder{probe: w.prober.Probe}
	var logs monLog
	m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: 4, MaxPerMinute: 5,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), summaryEvery: time.Nanosecond}
	c, _ := srccache.New(srccache.Options{})
	long := time.Now().Add(-2 * time.Hour)
	for _, k := range w.keys {
		_ = c.Put(&srccache.Record{Kind: srccache.KindWatch, Domain: "outbound:" + k, Refresh: long,
			Expires: time.Now().Add(time.Hour), Watch: &srccache.Watch{Policy: "encrypt", Level: "encrypt"}})
	}
	s := srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: quietLogger()})
	m.Register(s, c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitCalls(t, rec, 5)
	time.Sleep(2 * time.Second) // a sixth start would come by now
	calls, _, _ := rec.snapshot()
	if len(calls) != 5 {
		t.Fatalf("%d probes started within the first minute, want 5 (MaxPerMinute): %v", len(calls), calls)
	}
	sum := logs.lines("monitor behind")
	if len(sum) == 0 || !strings.Contains(sum[len(sum)-1], "level=WARN") || !strings.Contains(sum[len(sum)-1], "behind=15") {
		t.Errorf("summaries:\n%s", strings.Join(logs.lines("monitor"), "\n"))
	}
}

// TestMonitorRestartSpreadsOverdue: the first Sync reschedules the
// records restored overdue (the daemon was stopped) soon and spread,
// testing ones and those never probed first, instead of leaving them all
// due at once; a later Sync leaves schedules alone.
func TestMonitorRestartSpreadsOverdue(t *testing.T) {
	w := newMonitorWorld(t, 4, 1)
	now := time.Now()
	c, _ := srccache.New(srccache.Options{})
	put := func(k string, probed time.Time) {
		_ = c.Put(&srccache.Record{Kind: srccache.KindWatch, Domain: "outbound:" + k, Refresh: now.Add(-time.Hour),
			Expires: now.Add(time.Hour), Watch: &srccache.Watch{Policy: "encrypt", Level: "encrypt", Probed: probed}})
	}
	put("d00.example", now.Add(-2*time.Hour))
	put("d01.example", now.Add(-3*time.Hour))
	put("d02.example", time.Time{})
	put("t00.example", now.Add(-time.Hour))
	// d03.example is new.
	m := &Monitor{Engine: w.engine, Probe: w.prober.Probe, Logger: quietLogger(), Now: func() time.Time { return now }}
	m.Register(srccache.NewScheduler(c, srccache.SchedulerOptions{}), c)
	m.Sync()
	var order []string
	for _, r := range c.ByKind(srccache.KindWatch) {
		if !r.Refresh.After(now) || r.Refresh.After(now.Add(time.Minute)) {
			t.Errorf("%s: next check at %v, want within a minute of start", r.Domain, r.Refresh.Sub(now))
		}
		order = append(order, r.Domain)
	}
	slices.SortFunc(order, func(a, b string) int {
		return c.Get(srccache.KindWatch, a).Refresh.Compare(c.Get(srccache.KindWatch, b).Refresh)
	})
	want := []string{"outbound:t00.example", "outbound:d02.example", "outbound:d03.example", "outbound:d01.example", "outbound:d00.example"}
	if !slices.Equal(order, want) {
		t.Errorf("check order %v, want %v", order, want)
	}
	before := c.Get(srccache.KindWatch, "outbound:d00.example").Refresh
	m.Now = func() time.Time { return now.Add(2 * time.Minute) }
	m.Sync()
	if got := c.Get(srccache.KindWatch, "outbound:d00.example").Refresh; !got.Equal(before) {
		t.Errorf("a second Sync moved an overdue check from %v to %v", before, got)
	}
}

// TestMonitorReloadSyncs: after a table reload (Sync) an entry removed
// from the table is not probed again and loses its record, a new entry
// is checked soon, and the others keep being checked.
func TestMonitorReloadSyncs(t *testing.T) {
	w := newMonitorWorld(t, 5, 0)
	w.zone.MX(t, "n00.example", 10, "mx.shared.example", "127.0.0.41")
	rec := &recorder{probe: w.prober.Probe}
	interval := time.Second
	m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: 5, Interval: interval, Logger: quietLogger(),
		firstDelay: 10 * time.Millisecond, maxGap: 20 * time.Millisecond}
	c := runScheduled(t, m, nil)
	waitCalls(t, rec, 5)
	w.engine.Swap(buildStore(t, "outbound:\n  d00.example: encrypt\n  d01.example: encrypt\n  d02.example: encrypt\n  n00.example: encrypt\n  d03.example: may\n"))
	m.Sync()
	before, _, _ := rec.snapshot()
	for _, k := range []string{"d03.example", "d04.example"} {
		if c.Get(srccache.KindWatch, "outbound:"+k) != nil {
			t.Errorf("%s: watch record kept by Sync after it left the table", k)
		}
	}
	calls := waitCalls(t, rec, len(before)+7) // n00 once, d00-d02 twice
	n0, n := counts(before), counts(calls)
	for _, k := range []string{"d03.example", "d04.example"} {
		if n[k] != n0[k] {
			t.Errorf("%s probed %d times after it left the table", k, n[k]-n0[k])
		}
		if c.Get(srccache.KindWatch, "outbound:"+k) != nil {
			t.Errorf("%s still has a watch record", k)
		}
	}
	if n["n00.example"] == 0 {
		t.Errorf("the new entry was not probed: %v", calls)
	}
	if c.Count(srccache.KindWatch) != 4 {
		t.Errorf("%d watch records, want 4", c.Count(srccache.KindWatch))
	}
}

// TestMonitorKick: a lookup's kick probes a testing entry at once through
// the scheduler, but not again within the interval.
func TestMonitorKick(t *testing.T) {
	w := newMonitorWorld(t, 1, 2)
	rec := &recorder{probe: w.prober.Probe}
	m := &Monitor{Engine: w.engine, Probe: rec.Probe, Interval: time.Hour, Logger: quietLogger(), firstDelay: time.Hour}
	runScheduled(t, m, nil)
	entry := func(k string) *store.Entry {
		e := w.store.OutboundByKey(k)
		if e == nil {
			t.Fatalf("%s: no outbound entry", k)
		}
		return e
	}
	m.Kick(entry("t00.example"))
	waitCalls(t, rec, 1)
	m.Kick(entry("t00.example")) // probed within the interval: skipped
	m.Kick(entry("may.example")) // nothing to check
	m.Kick(entry("t01.example"))
	waitCalls(t, rec, 2)
	time.Sleep(200 * time.Millisecond) // a second probe of t00 would have started
	calls, _, _ := rec.snapshot()
	if !slices.Equal(calls, []string{"t00.example", "t01.example"}) {
		t.Errorf("probes = %v, want t00.example once, then t01.example", calls)
	}
}

// TestMonitorBacklogWindow: a large table does not get a watch record per
// entry at start: at most newWindow await their first check, the rest
// get theirs as checks are made, until every entry has been probed once.
func TestMonitorBacklogWindow(t *testing.T) {
	const n = 2500
	eng := New(buildStore(t, bigTable(n)), nil, events.NewRing(10), quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelEncrypt: {OK: true}}}
	var probes atomic.Int64
	m := &Monitor{Engine: eng, Logger: quietLogger(), firstDelay: 50 * time.Millisecond, maxGap: time.Microsecond,
		Probe: func(context.Context, string) (*probe.Result, error) { probes.Add(1); return ok, nil }}
	c, _ := srccache.New(srccache.Options{})
	m.Register(srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: quietLogger()}), c)
	m.Sync()
	if got := c.Count(srccache.KindWatch); got != newWindow {
		t.Fatalf("%d watch records after Sync, want %d (the window)", got, newWindow)
	}
	runScheduled(t, m, c) // Sync again: nothing changes
	deadline := time.Now().Add(60 * time.Second)
	for probes.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d entries probed within 60 s", probes.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if got := probes.Load(); got != n {
		t.Errorf("%d probes, want %d: an entry probed twice", got, n)
	}
	if got := c.Count(srccache.KindWatch); got != n {
		t.Errorf("%d watch records, want %d", got, n)
	}
}

// TestMonitorOverBound: with more monitored entries than the cache keeps
// watch records, every entry is still probed, and none again within the
// interval: the records checked longest ago are evicted and their
// entries get records again when their next check is due.
func TestMonitorOverBound(t *testing.T) { testOverBound(t, 0) }

// TestMonitorOverBoundReloads: over the bound, table reloads (Sync, here
// every 200 ms, the table unchanged) do not have the evicted entries
// checked again before their next check is due.
func TestMonitorOverBoundReloads(t *testing.T) { testOverBound(t, 200*time.Millisecond) }

// testOverBound runs TestMonitorOverBound, with a Sync every reload if
// positive.
func testOverBound(t *testing.T, reload time.Duration) {
	const n, bound = 12, 5
	eng := New(buildStore(t, bigTable(n)), nil, events.NewRing(10), quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelEncrypt: {OK: true}}}
	var mu sync.Mutex
	probed := map[string][]time.Time{}
	interval := 2 * time.Second
	m := &Monitor{Engine: eng, Logger: quietLogger(), Interval: interval, firstDelay: 10 * time.Millisecond, maxGap: 20 * time.Millisecond,
		Probe: func(_ context.Context, key string) (*probe.Result, error) {
			mu.Lock()
			probed[key] = append(probed[key], time.Now())
			mu.Unlock()
			return ok, nil
		}}
	c, _ := srccache.New(srccache.Options{Max: map[srccache.Kind]int{srccache.KindWatch: bound}})
	runScheduled(t, m, c)
	if reload > 0 {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(reload)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					m.Sync()
				}
			}
		}()
		t.Cleanup(func() { close(stop); <-done })
	}
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("p%06d.example", i))
	}
	checkedEachInterval(t, &mu, probed, keys, interval)
	if got := c.Count(srccache.KindWatch); got > bound {
		t.Errorf("%d watch records, bound %d", got, bound)
	}
}

// checkedEachInterval waits until each of keys was probed twice, then
// checks that none was probed again within 0.9 interval.
func checkedEachInterval(t *testing.T, mu *sync.Mutex, probed map[string][]time.Time, keys []string, interval time.Duration) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		twice := 0
		for _, k := range keys {
			if len(probed[k]) >= 2 {
				twice++
			}
		}
		snap := fmt.Sprint(probed)
		mu.Unlock()
		if twice == len(keys) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 30 s, %d of %d keys probed twice: %s", twice, len(keys), snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, ts := range probed {
		for i := 1; i < len(ts); i++ {
			if d := ts[i].Sub(ts[i-1]); d < 9*interval/10-50*time.Millisecond {
				t.Errorf("%s probed again after %v, interval %v", k, d, interval)
			}
		}
	}
}

// TestMonitorOverBoundMTASTS: MTA-STS domains, like table entries, are
// still each checked every interval when the monitored keys outnumber
// the cache's bound for watch records: an evicted domain's record comes
// back when its next check is due, not at the next table reload.
func TestMonitorOverBoundMTASTS(t *testing.T) {
	const n, bound = 6, 3
	now := time.Now()
	c, _ := srccache.New(srccache.Options{Max: map[srccache.Kind]int{srccache.KindWatch: bound}})
	var domains []string
	for i := range n {
		d := fmt.Sprintf("d%02d.test", i)
		domains = append(domains, d)
		_ = c.Put(stsRecord(d, "1", mtasts.ModeEnforce, "mx."+d, now))
	}
	eng := New(buildStore(t, "outbound: {}\n"), nil, events.NewRing(10), quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelSecure: {OK: true}}}
	var mu sync.Mutex
	probed := map[string][]time.Time{}
	interval := 2 * time.Second
	m := &Monitor{Engine: eng, Logger: quietLogger(), Interval: interval, firstDelay: 10 * time.Millisecond, maxGap: 20 * time.Millisecond,
		Probe: func(_ context.Context, key string) (*probe.Result, error) {
			mu.Lock()
			probed[key] = append(probed[key], time.Now())
			mu.Unlock()
			return ok, nil
		}}
	runScheduled(t, m, c)
	checkedEachInterval(t, &mu, probed, domains, interval)
	if got := c.Count(srccache.KindWatch); got > bound {
		t.Errorf("%d watch records, bound %d", got, bound)
	}
}

// TestMonitorOverBoundStaleRequeue: a key evicted twice (before its
// check, then after it) is checked again an interval after its probe,
// not at once when the first eviction's due time comes.
func TestMonitorOverBoundStaleRequeue(t *testing.T) {
	now := time.Now()
	clock := now
	eng := New(buildStore(t, "outbound:\n  a.example: encrypt\n  b.example: encrypt\n"), nil, events.NewRing(10), quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelEncrypt: {OK: true}}}
	m := &Monitor{Engine: eng, Logger: quietLogger(), Now: func() time.Time { return clock },
		Probe: func(context.Context, string) (*probe.Result, error) { return ok, nil }}
	c, _ := srccache.New(srccache.Options{Max: map[srccache.Kind]int{srccache.KindWatch: 1}})
	m.Register(srccache.NewScheduler(c, srccache.SchedulerOptions{}), c)
	m.Sync() // two records, one kept: a.example's (the first slot) is evicted
	if c.Get(srccache.KindWatch, "outbound:a.example") != nil {
		t.Fatal("a.example kept its record: the test needs it evicted")
	}
	// a.example is checked (a kick); its record, the one checked
	// earliest, is evicted again at once.
	m.handle(context.Background(), "outbound:a.example", nil)
	clock = now.Add(time.Minute) // past a.example's first slot
	m.topUp()
	if r := c.Get(srccache.KindWatch, "outbound:a.example"); r != nil && r.Refresh.Before(now.Add(54*time.Minute)) {
		t.Errorf("a.example, probed at start, due again %v later", r.Refresh.Sub(now))
	}
}
