package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
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

// dropLogEvery is the least time between two "probe queue full" log
// lines: each line counts the probes dropped since the last.
const dropLogEvery = 10 * time.Second

// Event kinds reported through CacheConfig.OnEvent.
const (
	// EventLearned: a domain was learned as "encrypt" for the first time
	// (or again after its learned state had lapsed).
	EventLearned = "learned"
	// EventDowngradeRefused: a probe found a learned domain without
	// working STARTTLS; the learned "encrypt" stays until LearnMaxAge has
	// passed since the last confirmation (STRIPTLS defence). Alert on it.
	EventDowngradeRefused = "learned-downgrade-refused"
	// EventUnlearned: a probe found no working STARTTLS after LearnMaxAge
	// had passed since the last confirmation; the domain is forgotten.
	EventUnlearned = "unlearned"
	// EventLearnedEvicted: the learned records reached MaxEntries and the
	// one confirmed least recently was dropped although LearnMaxAge had
	// not passed: a learned "encrypt" undone early, which a flood of newly
	// learned domains can cause. Alert on it. (A lapsed record dropped
	// this way is no event: it no longer answered.)
	EventLearnedEvicted = "learned-evicted"
)

// Event is something the cache noticed that operators should hear about.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	Reason string    `json:"reason"`
}

// ProbeFunc probes one target; (*Prober).Probe is one.
type ProbeFunc func(ctx context.Context, target string) (*Result, error)

// CacheConfig configures a Cache. Zero values take the defaults.
type CacheConfig struct {
	// Probe is called by Run to (re)probe targets. Required for Run.
	Probe ProbeFunc
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
	cfg CacheConfig
	log *slog.Logger
	// learnMaxAge is cfg.LearnMaxAge as SetLearnMaxAge last set it: the
	// table's learn_max_age, which a reload may change while lookups run.
	learnMaxAge atomic.Int64

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

	dirty     atomic.Bool
	saveMu    sync.Mutex
	cleanOnce sync.Once // stale temporary files removed at the first Save
}

type entry struct {
	res      *Result
	lastUsed atomic.Int64 // unix nanoseconds of the last Get/Learned
}

// learnedRec is the learned state of one domain.
type learnedRec struct {
	Domain string `json:"domain"`
	// FirstLearned is when a probe first showed STARTTLS on every
	// reachable MX; LastConfirmed the latest probe that showed it again.
	FirstLearned  time.Time `json:"first_learned"`
	LastConfirmed time.Time `json:"last_confirmed"`
	// LastContradicted is the latest probe that found STARTTLS missing
	// while learned, and ContradictedBy what it found.
	LastContradicted time.Time `json:"last_contradicted,omitzero"`
	ContradictedBy   string    `json:"contradicted_by,omitempty"`
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

// SetLearnMaxAge sets how long a learned "encrypt" is kept without a probe
// confirming it, as CacheConfig.LearnMaxAge does (d <= 0: the default). It
// applies to every later lookup and probe result, also for domains learned
// before, so a table reload that changes learn_max_age takes effect at once.
// It is safe to call while the cache is in use.
func (c *Cache) SetLearnMaxAge(d time.Duration) {
	if d <= 0 {
		d = DefaultLearnMaxAge
	}
	if old := time.Duration(c.learnMaxAge.Swap(int64(d))); old != d {
		c.log.Info("probe cache: learn_max_age changed", "from", old, "to", d)
	}
}

// LearnMaxAge returns the learn_max_age in use (see SetLearnMaxAge).
func (c *Cache) LearnMaxAge() time.Duration { return time.Duration(c.learnMaxAge.Load()) }

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

// Learned implements the engine's learned-policy source. It returns level
// "encrypt" for a bare domain a probe has shown offering STARTTLS with a
// working handshake on every reachable MX, as long as the last such probe
// is no older than LearnMaxAge — a later probe finding STARTTLS missing
// does not change that (STRIPTLS defence). why explains the answer for
// logs and `query --explain`. A domain without a fresh result gets a probe
// scheduled, so call it only when learning is on (learn: report or
// enforce); Learned itself never waits.
func (c *Cache) Learned(domain string) (level string, why string, ok bool) {
	t, err := parseTarget(domain, DefaultPort)
	if err != nil || !t.useMX || t.key != t.host { // bare domains only
		return "", "", false
	}
	now := c.cfg.Now()
	c.mu.RLock()
	e := c.entries[t.key]
	rec, hasRec := c.learned[t.key]
	var r learnedRec
	if hasRec {
		r = *rec
	}
	c.mu.RUnlock()
	if e != nil {
		e.lastUsed.Store(now.UnixNano())
	}
	if e == nil || !e.res.Fresh(now) {
		c.Schedule(t.key)
	}
	maxAge := c.LearnMaxAge()
	if !hasRec || now.Sub(r.LastConfirmed) > maxAge {
		return "", "", false
	}
	why = fmt.Sprintf("learned: every reachable MX offered STARTTLS (first seen %s, last confirmed %s)",
		r.FirstLearned.UTC().Format(time.RFC3339), r.LastConfirmed.UTC().Format(time.RFC3339))
	if r.LastContradicted.After(r.LastConfirmed) {
		why += fmt.Sprintf("; probe at %s found %s — kept until %s (STRIPTLS defence)",
			r.LastContradicted.UTC().Format(time.RFC3339), r.ContradictedBy,
			r.LastConfirmed.Add(maxAge).UTC().Format(time.RFC3339))
	}
	return LevelEncrypt, why, true
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
	if t, err := parseTarget(cp.Target, DefaultPort); err == nil && t.useMX && t.key == t.host {
		evs = c.learnLocked(&cp, now)
	}
	c.mu.Unlock()
	c.dirty.Store(true)
	c.emit(evs)
}

// emit logs evs and hands them to OnEvent; c.mu must not be held.
func (c *Cache) emit(evs []Event) {
	for _, ev := range evs {
		lvl := slog.LevelInfo
		if ev.Kind == EventDowngradeRefused || ev.Kind == EventLearnedEvicted {
			lvl = slog.LevelWarn
		}
		c.log.Log(context.Background(), lvl, "probe cache event", "kind", ev.Kind, "target", ev.Target, "reason", ev.Reason)
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(ev)
		}
	}
}

// learnLocked updates the learned state of r's domain; c.mu is held. A
// result with part of the addresses unknown (see addrsKnown) neither
// teaches nor confirms a learned policy: an address not seen may lack
// STARTTLS, and "encrypt" would then defer mail to it. It still counts
// against a learned policy when an address it saw lacks STARTTLS.
func (c *Cache) learnLocked(r *Result, now time.Time) []Event {
	rec := c.learned[r.Target]
	maxAge := c.LearnMaxAge()
	switch {
	case r.Status == StatusOK && r.Levels[LevelEncrypt].OK && r.Reachable() > 0 && addrsKnown(r):
		if rec == nil || r.Time.Sub(rec.LastConfirmed) > maxAge {
			c.learned[r.Target] = &learnedRec{Domain: r.Target, FirstLearned: r.Time, LastConfirmed: r.Time}
			evs := []Event{{Time: now, Kind: EventLearned, Target: r.Target,
				Reason: "every reachable MX offers STARTTLS: learned policy encrypt"}}
			if rec == nil && len(c.learned) > c.cfg.MaxEntries {
				if ev := c.evictLearnedLocked(r.Target, now); ev != nil {
					evs = append(evs, *ev)
				}
			}
			return evs
		}
		if r.Time.After(rec.LastConfirmed) {
			nr := *rec // records are replaced, never changed in place
			nr.LastConfirmed = r.Time
			c.learned[r.Target] = &nr
		}
	case r.Status == StatusNoSTARTTLS && rec != nil:
		if r.Time.Sub(rec.LastConfirmed) > maxAge {
			delete(c.learned, r.Target)
			return []Event{{Time: now, Kind: EventUnlearned, Target: r.Target,
				Reason: fmt.Sprintf("%s; STARTTLS last confirmed %s, more than learn_max_age %s ago: learned encrypt dropped",
					r.Reason, rec.LastConfirmed.UTC().Format(time.RFC3339), maxAge)}}
		}
		nr := *rec
		nr.LastContradicted, nr.ContradictedBy = r.Time, r.Reason
		c.learned[r.Target] = &nr
		return []Event{{Time: now, Kind: EventDowngradeRefused, Target: r.Target,
			Reason: fmt.Sprintf("%s; learned encrypt kept until %s (STARTTLS last confirmed %s): possible STRIPTLS attack or a changed MX",
				r.Reason, rec.LastConfirmed.Add(maxAge).UTC().Format(time.RFC3339),
				rec.LastConfirmed.UTC().Format(time.RFC3339))}}
	}
	return nil
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

// evictLearnedLocked drops the learned record confirmed least recently,
// except keep's; c.mu is held. Records that have lapsed (not confirmed
// within learn_max_age, so no longer answered by Learned) go first, for
// they are the least recently confirmed; dropping one still in force
// undoes a learned "encrypt" before learn_max_age, against the STRIPTLS
// defence, so it is returned as an EventLearnedEvicted for the caller to
// emit once c.mu is released.
func (c *Cache) evictLearnedLocked(keep string, now time.Time) *Event {
	var victim *learnedRec
	for k, rec := range c.learned {
		if k != keep && (victim == nil || rec.LastConfirmed.Before(victim.LastConfirmed)) {
			victim = rec
		}
	}
	if victim == nil {
		return nil
	}
	delete(c.learned, victim.Domain)
	maxAge := c.LearnMaxAge()
	until := victim.LastConfirmed.Add(maxAge)
	if !now.Before(until) {
		c.log.Debug("probe cache full: lapsed learned policy dropped",
			"domain", victim.Domain, "last_confirmed", victim.LastConfirmed, "max_entries", c.cfg.MaxEntries)
		return nil
	}
	return &Event{Time: now, Kind: EventLearnedEvicted, Target: victim.Domain,
		Reason: fmt.Sprintf("probe cache full (%d learned policies): learned encrypt, the least recently confirmed, dropped before learn_max_age %s "+
			"(STARTTLS last confirmed %s, it would have lasted until %s); a flood of newly learned domains can cause this. "+
			"Add an explicit outbound entry for the domain if encryption to it must stay required",
			c.cfg.MaxEntries, maxAge, victim.LastConfirmed.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))}
}

// Schedule queues target for a probe by Run, unless it is already queued
// or being probed. It never blocks.
func (c *Cache) Schedule(target string) {
	key, err := Canonical(target)
	if err != nil {
		return
	}
	c.qmu.Lock()
	if c.pending[key] {
		c.qmu.Unlock()
		return
	}
	if len(c.queue) >= c.cfg.MaxQueue {
		c.qmu.Unlock()
		c.noteDropped(key)
		return
	}
	c.pending[key] = true
	c.queue = append(c.queue, key)
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// noteDropped counts a probe dropped on a full queue and logs at most one
// line per dropLogEvery: a flood of lookups must not become a flood of
// log lines.
func (c *Cache) noteDropped(key string) {
	c.dropped.Add(1)
	now := time.Now().UnixNano()
	next := c.nextDropLog.Load()
	if now < next || !c.nextDropLog.CompareAndSwap(next, now+int64(dropLogEvery)) {
		return
	}
	c.log.Warn("probe queue full, probes dropped", "dropped", c.dropped.Swap(0), "latest", key, "max_queue", c.cfg.MaxQueue)
}

// next takes the next queued target, waiting until there is one or ctx
// ends.
func (c *Cache) next(ctx context.Context) (string, bool) {
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			key := c.queue[0]
			c.queue[0] = ""
			c.queue = c.queue[1:]
			more := len(c.queue) > 0
			c.qmu.Unlock()
			if more { // pass the wake-up on to another worker
				select {
				case c.wake <- struct{}{}:
				default:
				}
			}
			return key, true
		}
		c.qmu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return "", false
		}
	}
}

func (c *Cache) finished(key string) {
	c.qmu.Lock()
	delete(c.pending, key)
	c.qmu.Unlock()
}

// Run probes scheduled targets, re-probes entries shortly before they
// expire, drops idle ones and persists changes, until ctx ends; then it
// saves a last time and returns that save's error.
func (c *Cache) Run(ctx context.Context) error {
	if c.cfg.Probe == nil {
		return errors.New("probe cache: no Probe function configured")
	}
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, ok := c.next(ctx)
				if !ok {
					return
				}
				r, err := c.cfg.Probe(ctx, key)
				c.finished(key)
				if err != nil {
					if ctx.Err() == nil {
						c.log.Warn("probe failed", "target", key, "error", err)
					}
					continue
				}
				c.Put(r)
			}
		}()
	}
	scan := time.NewTicker(c.cfg.ScanEvery)
	defer scan.Stop()
	save := time.NewTicker(c.cfg.SaveEvery)
	defer save.Stop()
	c.scan()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return c.saveIfDirty()
		case <-scan.C:
			c.scan()
		case <-save.C:
			if err := c.saveIfDirty(); err != nil {
				c.log.Error("saving probe cache", "error", err)
			}
		}
	}
}

// scan schedules the entries due for a refresh and drops idle expired ones.
func (c *Cache) scan() {
	now := c.cfg.Now()
	var due []string
	c.mu.Lock()
	for key, e := range c.entries {
		idle := now.Sub(time.Unix(0, e.lastUsed.Load())) > c.cfg.IdleAfter
		r := e.res
		if idle {
			if !r.Fresh(now) {
				delete(c.entries, key)
				c.dirty.Store(true)
			}
			continue
		}
		// Refresh once 90% of the lifetime has passed, so that a used
		// entry is replaced before it goes stale.
		if refreshAt := r.Expires.Add(-r.Expires.Sub(r.Time) / 10); !now.Before(refreshAt) {
			due = append(due, key)
		}
	}
	c.mu.Unlock()
	for _, key := range due {
		c.Schedule(key)
	}
}

// ---- persistence ----

const cacheFileVersion = 1

type cacheFile struct {
	Version int          `json:"version"`
	Saved   time.Time    `json:"saved"`
	Entries []cacheEntry `json:"entries"`
	Learned []learnedRec `json:"learned"`
}

type cacheEntry struct {
	LastUsed time.Time `json:"last_used"`
	Result   *Result   `json:"result"`
}

// loadedFile is the cache file as Load reads it: every result and learned
// record is decoded on its own, so that one malformed record costs that
// record only, not the learned policies beside it.
type loadedFile struct {
	Version int               `json:"version"`
	Entries []json.RawMessage `json:"entries"`
	Learned []json.RawMessage `json:"learned"`
}

// maxSkipLogs caps the lines Load logs for skipped records; the rest are
// counted in its summary line.
const maxSkipLogs = 20

// Load reads the results persisted at path and makes path the file Save
// writes. A missing file is an empty cache. A file that is not JSON, is
// not a cache file or has an unknown version is logged and ignored — the
// cache starts empty and works — and never fails the caller: a probe
// cache is an optimisation, not configuration. Within a readable file,
// each result and learned record is decoded and checked on its own: a bad
// one is skipped and logged with its key, the others are kept (and so
// written back by the next Save), for the learned records are the
// STRIPTLS defence and must not all go because of one bad line.
func (c *Cache) Load(path string) {
	c.mu.Lock()
	c.path = path
	c.mu.Unlock()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Info("no probe cache yet", "path", path)
		return
	}
	if err != nil {
		c.log.Error("probe cache unreadable, starting empty", "path", path, "error", err)
		return
	}
	var f loadedFile
	if err := json.Unmarshal(data, &f); err != nil {
		c.log.Warn("probe cache corrupt, ignored", "path", path, "error", err)
		return
	}
	if f.Version != cacheFileVersion {
		c.log.Warn("probe cache has an unknown version, ignored", "path", path, "version", f.Version)
		return
	}
	skipped := 0
	skip := func(what string, i int, key string, why error) {
		skipped++
		if skipped <= maxSkipLogs {
			c.log.Warn("probe cache: invalid record skipped", "path", path, "record", fmt.Sprintf("%s[%d]", what, i),
				"key", key, "error", why)
		}
	}
	entries := make([]*entry, 0, len(f.Entries))
	for i, raw := range f.Entries {
		var fe cacheEntry
		if err := json.Unmarshal(raw, &fe); err != nil {
			skip("entries", i, recordKey(raw, "result", "target"), err)
			continue
		}
		r := fe.Result
		if err := validResult(r); err != nil {
			skip("entries", i, recordKey(raw, "result", "target"), err)
			continue
		}
		e := &entry{res: r}
		e.lastUsed.Store(fe.LastUsed.UnixNano())
		entries = append(entries, e)
	}
	now := c.cfg.Now()
	learned := make([]*learnedRec, 0, len(f.Learned))
	for i, raw := range f.Learned {
		rec := new(learnedRec)
		if err := json.Unmarshal(raw, rec); err != nil {
			skip("learned", i, recordKey(raw, "domain"), err)
			continue
		}
		if err := validLearned(rec); err != nil {
			skip("learned", i, rec.Domain, err)
			continue
		}
		learned = append(learned, rec)
	}
	c.mu.Lock()
	for _, e := range entries {
		c.entries[e.res.Target] = e
	}
	for _, rec := range learned {
		c.learned[rec.Domain] = rec
	}
	// A file written under a higher MaxEntries.
	for len(c.entries) > c.cfg.MaxEntries {
		c.evictResultLocked("")
	}
	var evs []Event
	for len(c.learned) > c.cfg.MaxEntries {
		if ev := c.evictLearnedLocked("", now); ev != nil {
			evs = append(evs, *ev)
		}
	}
	n, l := len(c.entries), len(c.learned)
	c.mu.Unlock()
	if skipped > 0 {
		c.log.Warn("probe cache: invalid records skipped", "path", path, "skipped", skipped)
	}
	c.log.Info("probe cache loaded", "path", path, "results", n, "learned", l)
	c.emit(evs)
}

// validResult checks a result read from the cache file.
func validResult(r *Result) error {
	if r == nil {
		return errors.New("no result")
	}
	if r.Time.IsZero() {
		return errors.New("no time")
	}
	if key, err := Canonical(r.Target); err != nil {
		return err
	} else if key != r.Target {
		return fmt.Errorf("target %q is not canonical (%q)", r.Target, key)
	}
	return nil
}

// validLearned checks a learned record read from the cache file.
func validLearned(rec *learnedRec) error {
	if key, err := Canonical(rec.Domain); err != nil {
		return err
	} else if key != rec.Domain {
		return fmt.Errorf("domain %q is not canonical (%q)", rec.Domain, key)
	}
	if rec.LastConfirmed.IsZero() {
		return errors.New("no last_confirmed time")
	}
	return nil
}

// recordKey digs the string at path (object keys) out of a record that
// did not decode, for the log line; "" if it cannot. It is as lenient as
// it can be: only the objects on the way and the string itself must be
// well-formed.
func recordKey(raw json.RawMessage, path ...string) string {
	for _, k := range path {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return ""
		}
		raw = m[k]
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return printable(s, false)
}

// Save writes every result and learned record to the cache file
// atomically: a temporary file in the same directory, fsync, rename over
// the old file, fsync of the directory. A crash leaves the old file or
// the new one, never a torn one. Without a path it does nothing.
func (c *Cache) Save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.dirty.Store(false)
	f := cacheFile{Version: cacheFileVersion, Saved: c.cfg.Now().UTC()}
	c.mu.RLock()
	path := c.path
	for _, e := range c.entries {
		f.Entries = append(f.Entries, cacheEntry{LastUsed: time.Unix(0, e.lastUsed.Load()).UTC(), Result: e.res})
	}
	for _, rec := range c.learned {
		f.Learned = append(f.Learned, *rec)
	}
	c.mu.RUnlock()
	if path == "" {
		return nil
	}
	c.cleanOnce.Do(func() { c.removeStaleTemps(path) })
	data, err := json.Marshal(&f)
	if err != nil {
		c.dirty.Store(true)
		return fmt.Errorf("encoding probe cache: %w", err)
	}
	if err := writeFileAtomic(path, data, 0o640); err != nil {
		c.dirty.Store(true)
		return err
	}
	return nil
}

func (c *Cache) saveIfDirty() error {
	if !c.dirty.Load() {
		return nil
	}
	return c.Save()
}

// staleTempAge is how old a temporary file of Save must be before a later
// process removes it: far longer than any Save takes, so that a Save
// running elsewhere on the same file is never disturbed.
const staleTempAge = 10 * time.Minute

// removeStaleTemps removes the temporary files a Save killed before its
// rename left next to path (see writeFileAtomic); a crash loop would
// otherwise fill the directory with them.
func (c *Cache) removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), tempPrefix(path)) {
			continue
		}
		m := filepath.Join(dir, de.Name())
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTempAge {
			if err := os.Remove(m); err == nil {
				c.log.Info("probe cache: removed a temporary file left by an interrupted save", "file", m)
			}
		}
	}
}

// tempPrefix is the name prefix of writeFileAtomic's temporary files for
// path.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// writeFileAtomic replaces path with data: temp file in the same
// directory (so rename is atomic), fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
