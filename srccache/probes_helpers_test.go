package srccache

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// clock is a test clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// evlog collects probe cache events.
type evlog struct {
	mu  sync.Mutex
	all []probe.Event
}

func (e *evlog) add(ev probe.Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }
func (e *evlog) kinds() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k []string
	for _, ev := range e.all {
		k = append(k, ev.Kind)
	}
	return k
}
func (e *evlog) last() probe.Event { e.mu.Lock(); defer e.mu.Unlock(); return e.all[len(e.all)-1] }
func (e *evlog) of(kind string) []probe.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []probe.Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// synthetic builds a judged result for domain at time at.
func synthetic(domain string, at time.Time, starttls bool) *probe.Result {
	a := probe.AddrResult{Addr: "192.0.2.1", Port: 25, Reached: true, STARTTLS: starttls}
	if starttls {
		a.TLS = &probe.TLSInfo{Version: "TLSv1.3", Trusted: true, Verify: probe.Check{OK: true}, Secure: probe.Check{OK: true}}
	}
	r := &probe.Result{Target: domain, NextHop: domain, Port: 25, Time: at,
		MX: []probe.MXResult{{Host: "mx1." + domain, Preference: 10, Addrs: []probe.AddrResult{a}}}}
	r.Judge()
	return r
}

var quiet = slog.New(slog.DiscardHandler)

// newProbes returns Probes over a new cache with options co (the probe
// kinds bounded by max, 0 for the default) and o, without a scheduler.
func newProbes(t testing.TB, co Options, max int, o ProbesOptions) *Probes {
	t.Helper()
	p, _ := newScheduled(t, co, max, o, false)
	return p
}

// newScheduled is newProbes with a scheduler on o.Now when sched is set
// (not running: see run).
func newScheduled(t testing.TB, co Options, max int, o ProbesOptions, sched bool) (*Probes, *Scheduler) {
	t.Helper()
	if max > 0 {
		co.Max = map[Kind]int{KindProbe: max, KindLearned: max}
	}
	c, err := New(co)
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = quiet
	}
	var s *Scheduler
	if sched {
		s = NewScheduler(c, SchedulerOptions{Logger: o.Logger, SaveEvery: 10 * time.Millisecond, Now: o.Now})
	}
	return NewProbes(c, s, o), s
}

// reload is a fresh Probes (no scheduler) over the file path, and the
// report of its Load, handed to Loaded.
func reload(t testing.TB, path string, max int, o ProbesOptions) (*Probes, LoadReport) {
	t.Helper()
	p := newProbes(t, Options{Path: path}, max, o)
	rep, err := p.c.Load(p.o.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.Loaded(rep)
	return p, rep
}
