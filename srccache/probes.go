package srccache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// Defaults of ProbesOptions.
const (
	DefaultLearnMaxAge  = 720 * time.Hour
	DefaultProbeWorkers = 32
	DefaultIdleAfter    = 7 * 24 * time.Hour
	DefaultProbeQueue   = 10000
)

// ProbesOptions configure Probes. Zero values take the defaults.
type ProbesOptions struct {
	// Probe (re)probes a target for the scheduler's KindProbe handler;
	// nil: results come only from Put (a command reading the file).
	Probe probe.Func
	// TTL is how long a result is fresh (default probe.DefaultTTL);
	// temporary and unreachable results live at most probe.RetryTTL.
	// Results are re-probed once 90% of their lifetime has passed.
	TTL time.Duration
	// LearnMaxAge is how long a learned "encrypt" is kept without a probe
	// confirming it (default 720h): a probe finding STARTTLS missing does
	// not undo it before then. SetLearnMaxAge changes it later.
	LearnMaxAge time.Duration
	// IdleAfter: a result nobody asked for (Get, Learned) in this long is
	// no longer refreshed, and dropped once expired (default 7 days).
	IdleAfter time.Duration
	// Workers is how many probes the scheduler keeps in flight (default
	// 32; the Prober's own Concurrency bounds the connections), MaxQueue
	// how many targets may wait for one (default 10000).
	Workers, MaxQueue int
	// OnEvent, if set, receives events. It is called outside the cache's
	// locks, except for learned-evicted events of Cache.Load, and should
	// not block for long.
	OnEvent func(probe.Event)
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// The engine's learned-policy interface (store.Learner).
var _ interface {
	Learned(domain string) (level string, why string, ok bool)
} = (*Probes)(nil)

// Probes keeps the latest probe result per target (KindProbe records) and
// the learned policies derived from them (KindLearned records) in the
// source cache; the scheduler refreshes results before they expire, drops
// idle ones and lapses learned policies. Lookups (Get, Learned) never
// wait for a probe. The cache bounds each kind (Options.Max; the daemon's
// probe.max_entries): with learning on, every lookup of an unlisted domain
// schedules a probe, and whoever can make Postfix look up domains (bounces
// to forged senders) picks them. It is safe for concurrent use.
type Probes struct {
	c      *Cache
	s      *Scheduler // nil: nothing is ever probed
	o      ProbesOptions
	log    *slog.Logger
	shared Shared // a fleet's hooks (SetShared)
	// learnMaxAge is o.LearnMaxAge as SetLearnMaxAge last set it: the
	// table's learn_max_age, which a reload may change while lookups run.
	learnMaxAge atomic.Int64
	// learnOff is set while the table says learn: off (SetLearning).
	learnOff atomic.Bool

	// wmu serializes Probes' writes: a result and the learned record it
	// changes are read and written together.
	wmu sync.Mutex

	// used holds each target's last lookup (unix minutes) since the cache
	// was made; a target missing has its record's Used.
	umu       sync.RWMutex
	used      map[string]*atomic.Int64
	nextSweep atomic.Int64 // unix nanoseconds: the next sweep of used

	pmu      sync.Mutex
	pendingE []probe.Event // learned-evicted events heard under the cache's lock

	dropped   atomic.Uint64 // the scheduler's KindProbe drops already logged
	nextDrop  atomic.Int64  // unix nanoseconds: earliest next "queue full" line
	corrupted atomic.Uint64 // cache files Load found damaged (Loaded)
}

// NewProbes returns the probe cache over c. With a scheduler s, it
// handles KindProbe (probes, refreshes, idle drops) and KindLearned
// (lapses) there: call it before s.Run. s may be nil (nothing is probed).
func NewProbes(c *Cache, s *Scheduler, o ProbesOptions) *Probes {
	if o.TTL <= 0 {
		o.TTL = probe.DefaultTTL
	}
	if o.LearnMaxAge <= 0 {
		o.LearnMaxAge = DefaultLearnMaxAge
	}
	if o.IdleAfter <= 0 {
		o.IdleAfter = DefaultIdleAfter
	}
	if o.Workers <= 0 {
		o.Workers = DefaultProbeWorkers
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultProbeQueue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Probes{c: c, s: s, o: o, log: o.Logger, used: map[string]*atomic.Int64{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.learnMaxAge.Store(int64(o.LearnMaxAge))
	c.OnEvict(KindLearned, p.learnedEvicted)
	c.OnEvict(KindProbe, func(r *Record) { p.forget(r.Domain) })
	if s != nil {
		s.Handle(KindProbe, KindOptions{Workers: o.Workers, MaxQueue: o.MaxQueue}, p.refresh)
		s.Handle(KindLearned, KindOptions{Workers: 1}, p.lapse)
		s.Tick(func() { p.sweep(p.o.Now()) })
	}
	return p
}

// Get returns the latest result for target, fresh or not (see
// Result.Fresh), without waiting. A missing or stale result schedules a
// probe. Results are shared: do not modify them.
func (p *Probes) Get(target string) (*probe.Result, bool) {
	key, err := probe.Canonical(target)
	if err != nil {
		return nil, false
	}
	now := p.o.Now()
	r := p.c.Get(KindProbe, key)
	if r == nil {
		p.schedule(key)
		return nil, false
	}
	p.touch(key, now)
	if !r.Probe.Fresh(now) {
		p.schedule(key)
	}
	return r.Probe, true
}

// All returns every result held, sorted by target (for status pages and
// reports). The results are shared: do not modify them.
func (p *Probes) All() []*probe.Result {
	recs := p.c.ByKind(KindProbe)
	out := make([]*probe.Result, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Probe)
	}
	return out
}

// Len returns the number of results held.
func (p *Probes) Len() int { return p.c.Count(KindProbe) }

// Schedule queues target for a probe, unless it is already queued or
// being probed. It never blocks.
func (p *Probes) Schedule(target string) {
	if key, err := probe.Canonical(target); err == nil {
		p.schedule(key)
	}
}

// dropLogEvery is the least time between two "probe queue full" lines.
const dropLogEvery = 10 * time.Second

// schedule queues the canonical key. Probes the scheduler drops on a full
// queue are logged at most once per dropLogEvery: a flood of lookups must
// not become a flood of log lines.
func (p *Probes) schedule(key string) {
	if p.s == nil || p.s.Queue(KindProbe, key) {
		return
	}
	d := p.s.Dropped(KindProbe)
	if d == p.dropped.Load() {
		return // already queued or in flight
	}
	now := time.Now().UnixNano()
	next := p.nextDrop.Load()
	if now < next || !p.nextDrop.CompareAndSwap(next, now+int64(dropLogEvery)) {
		return
	}
	prev := p.dropped.Swap(d)
	p.log.Warn("probe queue full, probes dropped", "dropped", d-prev, "latest", key, "max_queue", p.o.MaxQueue)
}

// Put stores r as the latest result for r.Target (a copy with Expires set
// from the TTL) and updates the learned state of the domain.
func (p *Probes) Put(r *probe.Result) {
	if r == nil {
		return
	}
	key, err := probe.Canonical(r.Target)
	if err != nil {
		p.log.Warn("probe cache: result with a bad target dropped", "target", r.Target, "error", err)
		return
	}
	cp := *r
	cp.Target = key
	ttl := p.o.TTL
	if cp.Status == probe.StatusTemporary || cp.Status == probe.StatusUnreachable {
		ttl = min(ttl, probe.RetryTTL)
	}
	cp.Expires = cp.Time.Add(ttl)
	now := p.o.Now()

	var evs []probe.Event
	p.wmu.Lock()
	before := p.c.Get(KindLearned, key)
	p.putResult(&cp, now)
	if _, bare := probe.BareDomain(key); bare && !p.learnOff.Load() {
		evs = p.learn(&cp, before, now)
	}
	after := p.c.Get(KindLearned, key)
	p.wmu.Unlock()
	p.emit(evs...)
	p.emit(p.takeEvicted()...)
	p.notifyShared(&cp, before, after)
}

// putResult writes res's record, with the target's last lookup (now for
// a new target); p.wmu is held.
func (p *Probes) putResult(res *probe.Result, now time.Time) {
	used := now
	if old := p.c.Get(KindProbe, res.Target); old != nil {
		used = p.lastUsed(res.Target, old)
	}
	if err := p.c.Put(probeRecord(res, used, p.o.IdleAfter)); err != nil {
		p.log.Error("probe cache: result not stored", "target", res.Target, "error", err)
		return
	}
	p.touch(res.Target, used) // so that a lookup allocates nothing
}

// probeRecord is the record of a result: refreshed once 90% of its
// lifetime has passed, so that a used result is replaced before it goes
// stale; it expires (Load skips it, eviction takes it first) when it is
// both stale and idle.
func probeRecord(res *probe.Result, used time.Time, idleAfter time.Duration) *Record {
	exp := res.Expires
	if u := used.Add(idleAfter); u.After(exp) {
		exp = u
	}
	life := max(res.Expires.Sub(res.Time), 0) // a result read from elsewhere may lack Expires
	return &Record{Kind: KindProbe, Domain: res.Target, Fetched: res.Time, Checked: res.Time,
		Expires: exp, Refresh: res.Expires.Add(-life / 10), Used: used, Probe: res}
}

// refresh is the scheduler's KindProbe handler: a result due (or a key
// queued) is probed again unless nobody asked for it in IdleAfter; an
// idle one is dropped once stale.
func (p *Probes) refresh(ctx context.Context, key string, r *Record) {
	now := p.o.Now()
	if r != nil && now.Sub(p.lastUsed(key, r)) > p.o.IdleAfter {
		p.wmu.Lock()
		defer p.wmu.Unlock()
		cur := p.c.Get(KindProbe, key)
		switch {
		case cur == nil || cur.Probe != r.Probe: // replaced meanwhile
		case !cur.Probe.Fresh(now):
			_ = p.c.Delete(KindProbe, key)
			p.forget(key)
		default:
			_ = p.c.Reschedule(cur, cur.Probe.Expires)
		}
		return
	}
	if p.o.Probe == nil {
		return
	}
	res, err := p.o.Probe(ctx, key)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("probe failed", "target", key, "error", err)
		}
		return
	}
	p.Put(res)
}

// emit logs evs and hands them to OnEvent.
func (p *Probes) emit(evs ...probe.Event) {
	for _, ev := range evs {
		lvl := slog.LevelInfo
		if ev.Kind == probe.EventDowngradeRefused || ev.Kind == probe.EventLearnedEvicted || ev.Kind == probe.EventCorrupt {
			lvl = slog.LevelWarn
		}
		p.log.Log(context.Background(), lvl, "probe cache event", "kind", ev.Kind, "target", ev.Target, "reason", ev.Reason)
		if p.o.OnEvent != nil {
			p.o.OnEvent(ev)
		}
	}
}

// Loaded takes what Cache.Load reported: a damaged file is an
// EventCorrupt (counted by Corrupted), learned policies evicted to fit
// the bound are events, and learned records restored get the expiry of
// the learn_max_age in use. Call it after Load.
func (p *Probes) Loaded(rep LoadReport) {
	p.emit(p.takeEvicted()...)
	if cr := rep.Corrupt; cr != nil {
		p.corrupted.Add(1)
		p.log.Error("probe cache corrupt", "path", cr.Path, "aside", cr.Aside, "salvaged", cr.Salvaged, "lost", cr.Lost, "error", cr.Err)
		p.emit(probe.Event{Time: p.o.Now(), Kind: probe.EventCorrupt, Target: cr.Path, Reason: cr.Reason()})
	}
	p.reexpire(p.LearnMaxAge())
	for _, r := range p.c.ByKind(KindProbe) {
		p.touch(r.Domain, r.Used)
	}
}

// Corrupted returns how many times Load found the cache file damaged.
func (p *Probes) Corrupted() uint64 { return p.corrupted.Load() }
