package probe

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of CacheConfig.
const (
	DefaultLearnMaxAge = 720 * time.Hour
	DefaultWorkers     = 32
	DefaultScanEvery   = time.Minute
	DefaultSaveEvery   = 10 * time.Second
	DefaultIdleAfter   = 7 * 24 * time.Hour
	DefaultMaxQueue    = 10000
	DefaultMaxEntries  = 50000
)

// CacheConfig configures a Cache. Zero values take the defaults.
type CacheConfig struct {
	// Probe is called by Run to (re)probe targets. Required for Run.
	Probe Func
	// Path is the JSON file results are persisted to ("" keeps them in
	// memory only). Load sets it too.
	Path string
	// TTL is how long a result is fresh (default 24h); temporary and
	// unreachable results live at most RetryTTL. Entries are re-probed
	// shortly before they expire.
	TTL time.Duration
	// LearnMaxAge is how long a learned "encrypt" is kept without a probe
	// confirming it (default 720h): a probe finding STARTTLS missing does
	// not undo it before then. SetLearnMaxAge changes it later.
	LearnMaxAge time.Duration
	// Workers is how many probes Run keeps in flight (default 32; the
	// Prober's own Concurrency bounds the connections).
	Workers int
	// ScanEvery is how often Run looks for entries to refresh (default 1m).
	ScanEvery time.Duration
	// SaveEvery is how often Run persists changed results (default 10s).
	SaveEvery time.Duration
	// IdleAfter: an entry nobody asked for (Get, Learned) in this long is
	// no longer refreshed, and dropped once expired (default 7 days).
	IdleAfter time.Duration
	// MaxQueue caps the targets waiting to be probed (default 10000);
	// further Schedule calls are dropped until the queue drains.
	MaxQueue int
	// MaxEntries caps the results held, and separately the learned
	// records (default 50000). With learning on, every lookup of an
	// unlisted domain schedules a probe, and whoever can make Postfix look
	// up domains (bounces to forged senders) picks them, so without a cap
	// memory and the cache file would grow with an attacker's domain
	// list. At the cap a new result replaces the one used least recently,
	// and a new learned record the one confirmed least recently. The two
	// caps are separate: dropping a result never drops a learned record.
	// Dropping a learned record still in force (confirmed within
	// LearnMaxAge) is an EventLearnedEvicted.
	MaxEntries int
	// OnEvent, if set, receives events. It is called from the cache's
	// goroutines, outside its locks, and should not block for long.
	OnEvent func(Event)
	// Logger receives the cache's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// The engine's learned-policy interface (store.Learner), restated here
// because probe imports no other package of the project.
var _ interface {
	Learned(domain string) (level string, why string, ok bool)
} = (*Cache)(nil)

// Cache holds the latest Result per target, refreshes them in the
// background and derives learned policies. Lookups (Get, Learned) never
// wait for a probe. It is safe for concurrent use.
type Cache struct {
	cfg    CacheConfig
	log    *slog.Logger
	shared Shared // a fleet's hooks (SetShared)
	// learnMaxAge is cfg.LearnMaxAge as SetLearnMaxAge last set it: the
	// table's learn_max_age, which a reload may change while lookups run.
	learnMaxAge atomic.Int64
	// learnOff is set while the table says learn: off (SetLearning):
	// results then neither create, confirm nor contradict learned records.
	learnOff atomic.Bool

	mu      sync.RWMutex
	entries map[string]*entry      // by canonical target
	learned map[string]*learnedRec // by domain
	path    string

	qmu     sync.Mutex
	queue   []string
	pending map[string]bool // queued or being probed
	wake    chan struct{}

	dropped     atomic.Int64 // probes dropped on a full queue, not yet logged
	nextDropLog atomic.Int64 // unix nanoseconds: earliest next "queue full" line

	corrupted atomic.Uint64 // cache files Load found damaged
	dirty     atomic.Bool
	saveMu    sync.Mutex
	cleanOnce sync.Once // stale temporary files removed at the first Save
}

type entry struct {
	res      *Result
	lastUsed atomic.Int64 // unix nanoseconds of the last Get/Learned
}

// NewCache returns an empty cache. Call Load to read the persisted
// results and Run to refresh them.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.LearnMaxAge <= 0 {
		cfg.LearnMaxAge = DefaultLearnMaxAge
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.ScanEvery <= 0 {
		cfg.ScanEvery = DefaultScanEvery
	}
	if cfg.SaveEvery <= 0 {
		cfg.SaveEvery = DefaultSaveEvery
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache{
		cfg:     cfg,
		log:     cfg.Logger,
		entries: map[string]*entry{},
		learned: map[string]*learnedRec{},
		path:    cfg.Path,
		pending: map[string]bool{},
		wake:    make(chan struct{}, 1),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.learnMaxAge.Store(int64(cfg.LearnMaxAge))
	return c
}

// Get returns the latest result for target, fresh or not (see
// Result.Fresh), without waiting. A missing or stale result schedules a
// probe. Results are shared: do not modify them.
func (c *Cache) Get(target string) (*Result, bool) {
	key, err := Canonical(target)
	if err != nil {
		return nil, false
	}
	now := c.cfg.Now()
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	if e == nil {
		c.Schedule(key)
		return nil, false
	}
	e.lastUsed.Store(now.UnixNano())
	if !e.res.Fresh(now) {
		c.Schedule(key)
	}
	return e.res, true
}

// All returns every result held, sorted by target (for status pages and
// reports). The results are shared: do not modify them.
func (c *Cache) All() []*Result {
	c.mu.RLock()
	out := make([]*Result, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e.res)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// Len returns the number of results held.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Put stores r as the latest result for r.Target (a copy with Expires
// set from the cache's TTL) and updates the learned state of the domain.
func (c *Cache) Put(r *Result) {
	if r == nil {
		return
	}
	key, err := Canonical(r.Target)
	if err != nil {
		c.log.Warn("probe cache: result with a bad target dropped", "target", r.Target, "error", err)
		return
	}
	cp := *r
	cp.Target = key
	ttl := c.cfg.TTL
	if cp.Status == StatusTemporary || cp.Status == StatusUnreachable {
		ttl = min(ttl, RetryTTL)
	}
	cp.Expires = cp.Time.Add(ttl)
	now := c.cfg.Now()

	var evs []Event
	c.mu.Lock()
	learnedBefore := c.learned[cp.Target]
	old := c.entries[cp.Target]
	e := &entry{res: &cp}
	if old != nil {
		e.lastUsed.Store(old.lastUsed.Load())
	} else {
		e.lastUsed.Store(now.UnixNano())
	}
	c.entries[cp.Target] = e
	if old == nil && len(c.entries) > c.cfg.MaxEntries {
		c.evictResultLocked(cp.Target)
	}
	if t, err := parseTarget(cp.Target, DefaultPort); err == nil && t.useMX && t.key == t.host && !c.learnOff.Load() {
		evs = c.learnLocked(&cp, now)
	}
	learnedAfter := c.learned[cp.Target]
	c.mu.Unlock()
	c.dirty.Store(true)
	c.emit(evs)
	c.notifyShared(&cp, learnedBefore, learnedAfter)
}

// emit logs evs and hands them to OnEvent; c.mu must not be held.
func (c *Cache) emit(evs []Event) {
	for _, ev := range evs {
		lvl := slog.LevelInfo
		if ev.Kind == EventDowngradeRefused || ev.Kind == EventLearnedEvicted || ev.Kind == EventCorrupt {
			lvl = slog.LevelWarn
		}
		c.log.Log(context.Background(), lvl, "probe cache event", "kind", ev.Kind, "target", ev.Target, "reason", ev.Reason)
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(ev)
		}
	}
}

// evictResultLocked drops the result used least recently, except keep's;
// c.mu is held. A linear scan: it runs only at the cap, at most once per
// probe, and probes are rate-limited.
func (c *Cache) evictResultLocked(keep string) {
	var victim string
	var oldest int64
	for k, e := range c.entries {
		if k == keep {
			continue
		}
		if lu := e.lastUsed.Load(); victim == "" || lu < oldest {
			victim, oldest = k, lu
		}
	}
	if victim != "" {
		delete(c.entries, victim)
		c.log.Debug("probe cache full: least recently used result dropped", "target", victim, "max_entries", c.cfg.MaxEntries)
	}
}
