package engine

import (
	"context"
	"fmt"
	"github.com/tlspolicyd/tlspolicyd/store"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// TestMonitorReportsWhatEnforcementDoes probes real loopback MX servers
// through an in-process DNS zone and checks the events a postmaster gets.
func TestMonitorReportsWhatEnforcementDoes(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	farm.GoodMX(t, "127.0.0.11", time.Time{}, "mx.good.example")
	farm.PlainMX(t, "127.0.0.12")
	farm.GoodMX(t, "127.0.0.13", time.Now().Add(5*24*time.Hour), "mx.expiring.example")
	z.MX(t, "good.example", 10, "mx.good.example", "127.0.0.11")
	z.MX(t, "lawfirm.example", 10, "mx.lawfirm.example", "127.0.0.12")
	z.MX(t, "plainbank.example", 10, "mx.plainbank.example", "127.0.0.12")
	z.MX(t, "expiring.example", 10, "mx.expiring.example", "127.0.0.13")

	s := buildStore(t, `
outbound:
  good.example: verify
  .good.example: encrypt
  lawfirm.example:
    policy: encrypt
    testing: true
  plainbank.example: encrypt
  expiring.example: verify
  opportunistic.example: may
  "[127.0.0.12]:`+strconv.Itoa(farm.Port)+`": encrypt
`)
	ev := events.NewRing(100)
	e := New(s, nil, ev, nil)
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid"})
	cache := &results{}
	m := &Monitor{Engine: e, Probe: p.Probe, Cache: cache}

	fs := m.CheckAll(context.Background())
	byKey := map[string][]Finding{}
	for _, f := range fs {
		byKey[f.Entry.Key] = append(byKey[f.Entry.Key], f)
	}
	if len(byKey["good.example"]) != 0 {
		t.Errorf("good.example: unexpected findings %+v", byKey["good.example"])
	}
	if f := byKey["lawfirm.example"]; len(f) != 1 || f[0].OK ||
		!strings.HasPrefix(f[0].Reason, "enforcing encrypt for lawfirm.example would defer mail: ") ||
		!strings.Contains(f[0].Reason, "STARTTLS") {
		t.Errorf("lawfirm.example (testing): %+v", f)
	}
	if f := byKey["plainbank.example"]; len(f) != 1 || !strings.HasPrefix(f[0].Reason, "mail to plainbank.example is deferred: policy encrypt cannot be met") {
		t.Errorf("plainbank.example (enforced): %+v", f)
	}
	if f := byKey["expiring.example"]; len(f) != 1 || f[0].Kind != events.CertExpiring || !f[0].OK ||
		!strings.Contains(f[0].Reason, "(in 5 days)") {
		t.Errorf("expiring.example: %+v", f)
	}
	for _, k := range []string{".good.example", "opportunistic.example"} {
		if cache.get(k) != nil {
			t.Errorf("%s should not be probed", k)
		}
	}
	if r := cache.get("good.example"); r == nil || r.Status != probe.StatusOK {
		t.Errorf("cache has no good result for good.example: %+v", r)
	}
	totals := ev.Totals()
	if totals[events.OutboundProbeFailed] != 3 || totals[events.CertExpiring] != 1 {
		t.Errorf("event totals = %v", totals)
	}
	// An event's domain is the destination's name or address, without
	// brackets or port: alerts, the report and /api/events?domain= use it.
	domains := map[string]string{}
	for _, e := range ev.Recent(100) {
		domains[e.Rule] = e.Domain
	}
	for key, want := range map[string]string{
		"plainbank.example":                       "plainbank.example",
		"[127.0.0.12]:" + strconv.Itoa(farm.Port): "127.0.0.12",
	} {
		if got := domains[key]; got != want {
			t.Errorf("event of %s: domain %q, want %q", key, got, want)
		}
	}
}

// TestLearnedPolicy: with learn: enforce, an unlisted domain whose probe
// shows STARTTLS on every MX answers encrypt; with learn: report or off,
// Postfix keeps getting NOTFOUND.
func TestLearnedPolicy(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	farm.GoodMX(t, "127.0.0.21", time.Time{}, "mx.tls.example")
	farm.PlainMX(t, "127.0.0.22")
	z.MX(t, "tls.example", 10, "mx.tls.example", "127.0.0.21")
	z.MX(t, "plain.example", 10, "mx.plain.example", "127.0.0.22")
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second, AllowPrivate: true, Roots: ca.Pool})
	c, err := srccache.New(srccache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cache := srccache.NewProbes(c, nil, srccache.ProbesOptions{Probe: p.Probe})
	for _, d := range []string{"tls.example", "plain.example"} {
		r, err := p.Probe(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		cache.Put(r)
	}
	for _, tt := range []struct{ learn, key, want string }{
		{"enforce", "tls.example", "OK encrypt"},
		{"enforce", "TLS.Example.", "OK encrypt"},
		{"enforce", "plain.example", "NOTFOUND"},
		{"enforce", "never-probed.example", "NOTFOUND"},
		{"report", "tls.example", "NOTFOUND"},
		{"off", "tls.example", "NOTFOUND"},
	} {
		s := buildStore(t, "defaults:\n  learn: "+tt.learn+"\noutbound:\n  listed.example: verify\n")
		e := New(s, cache, nil, nil)
		if got := lookup(t, e, tt.key); got != tt.want {
			t.Errorf("learn %s: %s = %q, want %q", tt.learn, tt.key, got, tt.want)
		}
		if tt.learn == "enforce" && tt.want == "OK encrypt" {
			ans, _ := e.Resolve("tls_policy", tt.key)
			if ans.Step != "learned" || !strings.Contains(ans.Why, "STARTTLS") {
				t.Errorf("explain: step %q why %q", ans.Step, ans.Why)
			}
		}
	}
}

// monitorWorld is a table of enforced and testing entries whose domains
// all have one real STARTTLS MX on loopback, and a prober confined to it.
type monitorWorld struct {
	store  *store.Store
	engine *Engine
	prober *probe.Prober
	keys   []string // probeable keys, testing ones first
	zone   *probetest.Zone
	farm   *probetest.Farm
}

func newMonitorWorld(t *testing.T, enforced, testing int) *monitorWorld {
	t.Helper()
	ca := probetest.NewCA(t)
	w := &monitorWorld{zone: probetest.NewZone(t), farm: probetest.NewFarm(t, ca)}
	w.farm.GoodMX(t, "127.0.0.41", time.Time{}, "mx.shared.example")
	var b strings.Builder
	b.WriteString("outbound:\n  .parent.example: encrypt\n  may.example: may\n")
	for i := range enforced {
		d := fmt.Sprintf("d%02d.example", i)
		fmt.Fprintf(&b, "  %s: encrypt\n", d)
		w.zone.MX(t, d, 10, "mx.shared.example", "127.0.0.41")
	}
	for i := range testing {
		d := fmt.Sprintf("t%02d.example", i)
		fmt.Fprintf(&b, "  %s: {policy: encrypt, testing: true}\n", d)
		w.zone.MX(t, d, 10, "mx.shared.example", "127.0.0.41")
		w.keys = append(w.keys, d)
	}
	for i := range enforced {
		w.keys = append(w.keys, fmt.Sprintf("d%02d.example", i))
	}
	w.store = buildStore(t, b.String())
	w.engine = New(w.store, nil, events.NewRing(100), quietLogger())
	w.prober = probe.New(probe.Config{Resolver: w.zone.Addr, Port: w.farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid", MaxPerMinute: -1, Logger: quietLogger()})
	return w
}

// recorder wraps a real prober: it records every call, counts the probes
// in flight, holds each for a moment so that concurrency shows, and can
// answer ErrRateLimited for chosen keys as a saturated prober would.
type recorder struct {
	probe  probe.Func
	hold   time.Duration
	refuse map[string]bool

	mu          sync.Mutex
	calls       []string
	starts      []time.Time
	inFlight    int
	maxInFlight int
}

func (r *recorder) Probe(ctx context.Context, key string) (*probe.Result, error) {
	r.mu.Lock()
	r.calls = append(r.calls, key)
	r.starts = append(r.starts, time.Now())
	r.inFlight++
	r.maxInFlight = max(r.maxInFlight, r.inFlight)
	refuse := r.refuse[key]
	delete(r.refuse, key) // refused once
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()
	if refuse {
		return nil, fmt.Errorf("probe %s: %w (120 per 1m0s): next turn in 41s, after the deadline", key, probe.ErrRateLimited)
	}
	if r.hold > 0 {
		select {
		case <-time.After(r.hold):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return r.probe(ctx, key)
}

func (r *recorder) inFlightNow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight
}

func (r *recorder) snapshot() (calls []string, starts []time.Time, maxInFlight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls), slices.Clone(r.starts), r.maxInFlight
}

// counts returns how often each key was probed.
func counts(calls []string) map[string]int {
	n := map[string]int{}
	for _, c := range calls {
		n[c]++
	}
	return n
}

// monLog collects log output safely across goroutines.
type monLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *monLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *monLog) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// results is a ResultStore for tests: the last result per target.
type results struct {
	mu sync.Mutex
	m  map[string]*probe.Result
}

func (c *results) Put(r *probe.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*probe.Result{}
	}
	c.m[r.Target] = r
}

func (c *results) get(target string) *probe.Result {
	key, err := probe.Canonical(target)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

// TestMonitorWorkersBoundConcurrency: however large the table, no more
// than Workers probes are in flight, for CheckAll and on the scheduler,
// and CheckAll probes every monitored entry exactly once (the first
// version started one goroutine per entry: 61,000 for a 100,000-entry
// table).
func TestMonitorWorkersBoundConcurrency(t *testing.T) {
	w := newMonitorWorld(t, 24, 6)
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprint("CheckAll ", workers, " workers"), func(t *testing.T) {
			rec := &recorder{probe: w.prober.Probe, hold: 20 * time.Millisecond}
			m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: workers, Logger: quietLogger()}
			m.CheckAll(context.Background())
			calls, _, maxIn := rec.snapshot()
			if maxIn > workers {
				t.Errorf("%d probes in flight at once, want at most %d", maxIn, workers)
			}
			if workers > 1 && maxIn < 2 {
				t.Errorf("at most %d probe in flight: the workers do not run in parallel", maxIn)
			}
			n := counts(calls)
			for _, k := range w.keys {
				if n[k] != 1 {
					t.Errorf("%s probed %d times, want 1", k, n[k])
				}
			}
			if len(calls) != len(w.keys) {
				t.Errorf("%d probes for %d monitored entries: %v", len(calls), len(w.keys), calls)
			}
		})
	}
	t.Run("scheduled 3 workers", func(t *testing.T) {
		rec := &recorder{probe: w.prober.Probe, hold: 50 * time.Millisecond}
		m := &Monitor{Engine: w.engine, Probe: rec.Probe, Workers: 3, Logger: quietLogger(),
			firstDelay: time.Millisecond, maxGap: time.Microsecond}
		runScheduled(t, m, nil)
		waitCalls(t, rec, len(w.keys))
		if _, _, maxIn := rec.snapshot(); maxIn > 3 || maxIn < 2 {
			t.Errorf("%d probes in flight at most, want 2 or 3 (Workers 3)", maxIn)
		}
	})
}

// TestMonitorCancelStops: ending the context stops the checks at once,
// with probes in flight (an MX that never sends its banner) and entries
// still to come; nothing is probed after CheckAll or the scheduler's Run
// returns.
func TestMonitorCancelStops(t *testing.T) {
	w := newMonitorWorld(t, 0, 0)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.42", strconv.Itoa(w.farm.Port)))
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var connMu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			connMu.Lock()
			conns = append(conns, c) // accepted, never answered
			connMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		connMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connMu.Unlock()
	})
	var b strings.Builder
	b.WriteString("outbound:\n")
	for i := range 20 {
		d := fmt.Sprintf("h%02d.example", i)
		fmt.Fprintf(&b, "  %s: verify\n", d)
		w.zone.MX(t, d, 10, "mx.hang.example", "127.0.0.42")
	}
	eng := New(buildStore(t, b.String()), nil, events.NewRing(100), quietLogger())

	for _, tt := range []struct {
		name string
		run  func(ctx context.Context, m *Monitor)
	}{
		{"CheckAll", func(ctx context.Context, m *Monitor) { m.CheckAll(ctx) }},
		{"scheduled", func(ctx context.Context, m *Monitor) {
			c, _ := srccache.New(srccache.Options{})
			s := srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: quietLogger()})
			m.Register(s, c)
			m.Sync()
			_ = s.Run(ctx)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{probe: w.prober.Probe}
			m := &Monitor{Engine: eng, Probe: rec.Probe, Workers: 2, Interval: 2 * time.Second, Logger: quietLogger(),
				firstDelay: time.Millisecond, maxGap: time.Microsecond}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				tt.run(ctx, m)
			}()
			deadline := time.Now().Add(20 * time.Second)
			for rec.inFlightNow() < 2 {
				if time.Now().After(deadline) {
					t.Fatal("the workers never got two probes in flight")
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(2 * time.Second): // the hung probes would take 3 s per step
				t.Fatal("still running 2 s after its context ended")
			}
			calls, _, _ := rec.snapshot()
			if len(calls) != 2 {
				t.Errorf("%d probes started, want the 2 in flight only: %v", len(calls), calls)
			}
			// Returned with no probe in flight: it waited for its
			// workers, the only callers of Probe, so none can start a
			// probe later (no fixed wait needed to see that).
			if n := rec.inFlightNow(); n != 0 {
				t.Errorf("returned with %d probes still in flight: its workers outlive it", n)
			}
		})
	}
}

func TestPassGap(t *testing.T) {
	span := 54 * time.Minute // 90% of the default hour
	for _, tt := range []struct {
		n, perMinute int
		want         time.Duration
	}{
		{0, 120, 0},
		{61000, 0, span / 61000},             // spread over the interval
		{61000, 120, 500 * time.Millisecond}, // the cap is slower
		{1000, 120, span / 1000},             // 3.24 s: within the cap
		{10, 120, maxGap},                    // a small table is done within minutes
		{10, 1, time.Minute},                 // the cap wins over maxGap
		{100000, -1, span / 100000},          // no cap
	} {
		if got := passGap(tt.n, span, tt.perMinute, maxGap); got != tt.want {
			t.Errorf("passGap(%d, %v, %d) = %v, want %v", tt.n, span, tt.perMinute, got, tt.want)
		}
	}
}

// TestMonitorCheckAllGoroutinesFlat: CheckAll over a large table runs
// with a goroutine count independent of the table's size (the first
// version held one goroutine, and its probe's memory, per entry: VmRSS
// 171 → 789 MB on a 100,000-entry table).
func TestMonitorCheckAllGoroutinesFlat(t *testing.T) {
	w := newMonitorWorld(t, 400, 0)
	base := runtime.NumGoroutine()
	var peak, probes atomic.Int64
	probeFn := func(ctx context.Context, key string) (*probe.Result, error) {
		probes.Add(1)
		if n := int64(runtime.NumGoroutine()); n > peak.Load() {
			peak.Store(n)
		}
		return w.prober.Probe(ctx, key)
	}
	m := &Monitor{Engine: w.engine, Probe: probeFn, Workers: 4, Logger: quietLogger()}
	m.CheckAll(context.Background())
	if probes.Load() != 400 {
		t.Fatalf("%d probes, want 400", probes.Load())
	}
	// 4 workers, each probe's own few goroutines (DNS, SMTP session,
	// timers) and the fake MX's sessions: far fewer than 400.
	if extra := int(peak.Load()) - base; extra > 60 {
		t.Errorf("%d goroutines more than before the pass over 400 entries: not bounded by the workers", extra)
	}
}

// BenchmarkMonitorPass100k: one CheckAll over 100,000 enforced entries
// with an instant prober, for the monitor's own cost per pass (ordering,
// hand-out, judging): memory is the pass's entry list, not per-entry
// goroutines.
func BenchmarkMonitorPass100k(b *testing.B) {
	eng := New(buildStore(b, bigTable(100000)), nil, events.NewRing(100), quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelEncrypt: {OK: true}}}
	m := &Monitor{Engine: eng, Logger: quietLogger(),
		Probe: func(context.Context, string) (*probe.Result, error) { return ok, nil }}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m.CheckAll(context.Background())
	}
}

// BenchmarkMonitorSync100k: the first Sync of a 100,000-entry table
// (newWindow records written, the rest in the backlog), then a Sync with
// nothing changed (a table reload), for the cost of following the table.
func BenchmarkMonitorSync100k(b *testing.B) {
	eng := New(buildStore(b, bigTable(100000)), nil, events.NewRing(100), quietLogger())
	for _, name := range []string{"first", "unchanged"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				c, _ := srccache.New(srccache.Options{Max: map[srccache.Kind]int{srccache.KindWatch: 200000}})
				m := &Monitor{Engine: eng, Logger: quietLogger()}
				m.Register(srccache.NewScheduler(c, srccache.SchedulerOptions{}), c)
				if name == "unchanged" {
					m.Sync()
				}
				b.StartTimer()
				m.Sync()
				if n := c.Count(srccache.KindWatch); n != newWindow {
					b.Fatalf("%d watch records", n)
				}
			}
		})
	}
}

func bigTable(n int) string {
	var y strings.Builder
	y.WriteString("outbound:\n")
	for i := range n {
		fmt.Fprintf(&y, "  p%06d.example: encrypt\n", i)
	}
	return y.String()
}
