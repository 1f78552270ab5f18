package srccache

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runScheduler runs s until the test ends and returns a function that
// stops it and waits for Run's return.
func runScheduler(t *testing.T, s *Scheduler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Due records are handled in refresh order, each once until its handler
// gives it a new Refresh; records of kinds without a handler never are.
func TestSchedulerDueOrder(t *testing.T) {
	c, _ := New(Options{})
	now := time.Now()
	for i, d := range []string{"c.test", "a.test", "b.test"} {
		r := rec(KindMTASTS, d, 0, 24*time.Hour)
		r.Refresh = now.Add(-time.Duration(3-i) * time.Minute) // c first, then a, then b
		_ = c.Put(r)
	}
	_ = c.Put(&Record{Kind: KindWatch, Domain: "w.test", Refresh: now.Add(-time.Hour), Expires: now.Add(time.Hour)})
	s := NewScheduler(c, SchedulerOptions{})
	var mu sync.Mutex
	var order []string
	s.Handle(KindMTASTS, KindOptions{Workers: 1}, func(_ context.Context, key string, r *Record) {
		mu.Lock()
		order = append(order, key)
		mu.Unlock()
		_ = c.Put(&Record{Kind: KindMTASTS, Domain: key, MTASTS: r.MTASTS, Refresh: time.Now().Add(time.Hour), Expires: r.Expires})
	})
	runScheduler(t, s)
	waitUntil(t, "three handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= 3 })
	time.Sleep(50 * time.Millisecond) // nothing more is due
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 3 || order[0] != "c.test" || order[1] != "a.test" || order[2] != "b.test" {
		t.Fatalf("order %v", order)
	}
	if w := c.Get(KindWatch, "w.test"); !w.Refresh.Equal(now.Add(-time.Hour)) {
		t.Fatalf("a kind without a handler was touched: %v", w.Refresh)
	}
}

// Queued keys go first, once however often they are queued; a full queue
// drops and counts; Workers bounds the handlers in flight.
func TestSchedulerQueueAndWorkers(t *testing.T) {
	c, _ := New(Options{})
	s := NewScheduler(c, SchedulerOptions{})
	release := make(chan struct{})
	var running, peak, calls atomic.Int32
	var mu sync.Mutex
	seen := map[string]int{}
	s.Handle(KindProbe, KindOptions{Workers: 2, MaxQueue: 5}, func(ctx context.Context, key string, r *Record) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		mu.Lock()
		seen[key]++
		mu.Unlock()
		calls.Add(1)
		if r != nil {
			t.Errorf("queued key %s came with a record", key)
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		running.Add(-1)
	})
	for _, k := range []string{"a", "b", "c", "a", "d", "e", "f", "g"} {
		s.Queue(KindProbe, k)
	}
	// a..e fit (a queued twice counts once), f and g are dropped.
	if s.Dropped(KindProbe) != 2 || s.Queued(KindProbe) != 5 {
		t.Fatalf("dropped %d, queued %d", s.Dropped(KindProbe), s.Queued(KindProbe))
	}
	if s.Queue(KindWatch, "x") {
		t.Fatal("Queue accepted a kind without a handler")
	}
	runScheduler(t, s)
	waitUntil(t, "two running", func() bool { return running.Load() == 2 })
	if s.Queue(KindProbe, "a") {
		t.Fatal("a key being handled was queued again")
	}
	time.Sleep(50 * time.Millisecond)
	if peak.Load() != 2 {
		t.Fatalf("peak %d handlers, want 2", peak.Load())
	}
	close(release)
	waitUntil(t, "all handled", func() bool { return calls.Load() == 5 })
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if seen[k] != 1 {
			t.Fatalf("handled %v", seen)
		}
	}
}

// PerMinute caps the starts of a kind within a minute.
func TestSchedulerPerMinute(t *testing.T) {
	c, _ := New(Options{})
	s := NewScheduler(c, SchedulerOptions{})
	var calls atomic.Int32
	s.Handle(KindWatch, KindOptions{Workers: 10, PerMinute: 3}, func(context.Context, string, *Record) { calls.Add(1) })
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		s.Queue(KindWatch, k)
	}
	runScheduler(t, s)
	waitUntil(t, "three started", func() bool { return calls.Load() == 3 })
	time.Sleep(200 * time.Millisecond)
	if calls.Load() != 3 || s.Queued(KindWatch) != 2 {
		t.Fatalf("%d started, %d queued; want 3 and 2 within the minute", calls.Load(), s.Queued(KindWatch))
	}
}

// A handler that writes nothing leaves its record leased: not dispatched
// again before the lease ends.
func TestSchedulerLease(t *testing.T) {
	c, _ := New(Options{})
	now := time.Now()
	_ = c.Put(&Record{Kind: KindDANE, Domain: "a.test", Refresh: now.Add(-time.Second), Expires: now.Add(time.Hour)})
	s := NewScheduler(c, SchedulerOptions{})
	var calls atomic.Int32
	s.Handle(KindDANE, KindOptions{Lease: 200 * time.Millisecond}, func(context.Context, string, *Record) { calls.Add(1) })
	runScheduler(t, s)
	waitUntil(t, "first call", func() bool { return calls.Load() == 1 })
	if r := c.Get(KindDANE, "a.test"); r.Refresh.Before(now.Add(150 * time.Millisecond)) {
		t.Fatalf("not leased: refresh %v", r.Refresh.Sub(now))
	}
	time.Sleep(100 * time.Millisecond)
	if calls.Load() != 1 {
		t.Fatalf("%d calls within the lease", calls.Load())
	}
	waitUntil(t, "second call after the lease", func() bool { return calls.Load() == 2 })
}

// Reschedule of a record a writer replaced meanwhile changes nothing.
func TestRescheduleKeepsNewerRecord(t *testing.T) {
	c, _ := New(Options{})
	old := rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour)
	_ = c.Put(old)
	newer := rec(KindMTASTS, "a.test", 5*time.Hour, 48*time.Hour)
	_ = c.Put(newer)
	if err := c.Reschedule(old, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(KindMTASTS, "a.test"); got != newer {
		t.Fatalf("a stale Reschedule replaced the newer record: %+v", got)
	}
}

// Run saves a changed cache every SaveEvery and when it returns, and runs
// the Tick functions.
func TestSchedulerSaves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.json")
	c, _ := New(Options{Path: path})
	s := NewScheduler(c, SchedulerOptions{SaveEvery: 20 * time.Millisecond})
	var ticks atomic.Int32
	s.Tick(func() { ticks.Add(1) })
	stop := runScheduler(t, s)
	_ = c.Put(rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour))
	waitUntil(t, "saved", func() bool { return !c.Changed() })
	_ = c.Put(rec(KindMTASTS, "b.test", time.Hour, 24*time.Hour))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d, _ := New(Options{Path: path})
	if rep, err := d.Load(t0); err != nil || rep.Records != 2 {
		t.Fatalf("Load after Run = %+v, %v", rep, err)
	}
	if ticks.Load() == 0 {
		t.Fatal("Tick functions not run")
	}
}

// Held finds the record a handler was given, or the lease's copy of it,
// and nothing once a writer replaced it.
func TestHeld(t *testing.T) {
	c, _ := New(Options{})
	r := rec(KindMTASTS, "a.test", time.Hour, 24*time.Hour)
	_ = c.Put(r)
	if c.Held(r) != r {
		t.Fatal("Held of the record held")
	}
	_ = c.Reschedule(r, t0.Add(10*time.Minute)) // the lease
	leased := c.Get(KindMTASTS, "a.test")
	if leased == r || c.Held(r) != leased {
		t.Fatalf("Held of a leased record = %+v, want the lease's copy", c.Held(r))
	}
	newer := rec(KindMTASTS, "a.test", time.Hour, 48*time.Hour)
	_ = c.Put(newer)
	if c.Held(r) != nil {
		t.Fatal("Held returned a record a writer replaced")
	}
	_ = c.Delete(KindMTASTS, "a.test")
	if c.Held(newer) != nil {
		t.Fatal("Held returned a deleted record")
	}
}
