package srccache

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// DefaultMaxRecords bounds each kind of record whose bound Options.Max
// leaves at 0.
const DefaultMaxRecords = 100000

// Options configure a Cache.
type Options struct {
	// Max bounds the records kept of each kind (DefaultMaxRecords for a
	// kind missing or <= 0); past it, the records of that kind expiring
	// first are evicted, so a flood of one kind never evicts another.
	Max map[Kind]int
	// Path is the snapshot file Save writes and Load reads ("" = none).
	Path string
	// ReadOnly: Load never moves a damaged file aside and Save writes
	// nothing (a command reading the daemon's file).
	ReadOnly bool
	// OnChange, if set, is called after every committed Put and Delete
	// (not for Reschedule or Load) and eviction, with the
	// record before (nil for a new one) and after (nil when deleted or
	// evicted). It runs on the writer's goroutine, under the write lock:
	// it must not block or call back into the cache;
	// it is where a shared cache would publish records.
	OnChange func(old, cur *Record)
	// OnEvict, if set, is called for every record dropped to stay within
	// its kind's bound, after OnChange and the kind's own listeners
	// (Cache.OnEvict).
	OnEvict func(*Record)
}

// Cache is the go-memdb source cache. Every method is safe for concurrent
// use.
//
// Get, on every lookup's path, reads a plain map kept beside the database
// (written under the same lock as it): a go-memdb read of the compound
// id index costs 28 allocations and 7.7 µs (BenchmarkResolveCached),
// which would make a cached answer cost several table hits. Everything
// else (refresh order, eviction order, per-domain lists, snapshots) reads
// the database.
type Cache struct {
	opts    Options
	db      *memdb.MemDB
	n       atomic.Int64
	evicted atomic.Uint64
	changed atomic.Bool
	wake    chan struct{}
	kinds   map[Kind]int             // records per kind; under wmu
	counts  sync.Map                 // Kind -> *kindCount, for Count and EvictedKind
	onEvict map[Kind][]func(*Record) // set before use

	saveMu    sync.Mutex
	upgraded  string    // the older format Load read ("" if none): Save keeps that file as PATH.v1; under saveMu
	cleanOnce sync.Once // stale temporary files removed at the first Save

	wmu   sync.Mutex // serializes writers: the database and front change together
	rmu   sync.RWMutex
	front map[frontKey]*Record
}

type frontKey struct {
	kind   Kind
	domain string
}

// New returns an empty cache.
func New(opts Options) (*Cache, error) {
	db, err := memdb.NewMemDB(dbSchema())
	if err != nil {
		return nil, fmt.Errorf("srccache: schema: %w", err)
	}
	return &Cache{opts: opts, db: db, wake: make(chan struct{}, 1), front: map[frontKey]*Record{},
		kinds: map[Kind]int{}, onEvict: map[Kind][]func(*Record){}}, nil
}

// OnEvict adds a listener for the records of kind evicted to stay within
// the kind's bound. Call it before the cache is used. It runs under the
// write lock: it must not block or call back into the cache.
func (c *Cache) OnEvict(kind Kind, f func(*Record)) {
	c.onEvict[kind] = append(c.onEvict[kind], f)
}

// max is kind's bound.
func (c *Cache) max(kind Kind) int {
	if n := c.opts.Max[kind]; n > 0 {
		return n
	}
	return DefaultMaxRecords
}

// kindCount is one kind's record count and evictions, read without the
// write lock.
type kindCount struct {
	n       atomic.Int64
	evicted atomic.Uint64
}

func (c *Cache) kindCount(kind Kind) *kindCount {
	v, _ := c.counts.LoadOrStore(kind, new(kindCount))
	return v.(*kindCount)
}

// Count returns the number of records of kind.
func (c *Cache) Count(kind Kind) int {
	if v, ok := c.counts.Load(kind); ok {
		return int(v.(*kindCount).n.Load())
	}
	return 0
}

// EvictedKind returns how many records of kind were evicted to stay within
// the kind's bound.
func (c *Cache) EvictedKind(kind Kind) uint64 {
	if v, ok := c.counts.Load(kind); ok {
		return v.(*kindCount).evicted.Load()
	}
	return 0
}

// addCount changes kind's count by d; c.wmu is held.
func (c *Cache) addCount(kind Kind, d int) {
	c.kinds[kind] += d
	c.kindCount(kind).n.Store(int64(c.kinds[kind]))
	c.n.Add(int64(d))
}

// noteEvicted counts n records of kind evicted.
func (c *Cache) noteEvicted(kind Kind, n int) {
	if n > 0 {
		c.evicted.Add(uint64(n))
		c.kindCount(kind).evicted.Add(uint64(n))
	}
}

// Changed reports whether the cache changed since the last Save.
func (c *Cache) Changed() bool { return c.changed.Load() }

// Get returns the record of kind for domain, or nil. It does not look at
// expiry: see Record.Valid. It allocates nothing.
func (c *Cache) Get(kind Kind, domain string) *Record {
	c.rmu.RLock()
	r := c.front[frontKey{kind, domain}]
	c.rmu.RUnlock()
	return r
}

// setFront records the committed change of one record in the front map.
func (c *Cache) setFront(kind Kind, domain string, r *Record) {
	c.rmu.Lock()
	if r == nil {
		delete(c.front, frontKey{kind, domain})
	} else {
		c.front[frontKey{kind, domain}] = r
	}
	c.rmu.Unlock()
}

// ByDomain returns every record of domain.
func (c *Cache) ByDomain(domain string) []*Record {
	return c.list(indexDomain, domain)
}

// All returns every record, by kind and domain.
func (c *Cache) All() []*Record { return c.list(indexID) }

// ByKind returns every record of kind, by key.
func (c *Cache) ByKind(kind Kind) []*Record { return c.list(indexID+"_prefix", string(kind)) }

func (c *Cache) list(index string, args ...any) []*Record {
	it, err := c.db.Txn(false).Get(tableRecords, index, args...)
	if err != nil {
		return nil
	}
	var out []*Record
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*Record))
	}
	return out
}

// Len returns the number of records.
func (c *Cache) Len() int { return int(c.n.Load()) }

// Evicted returns how many records were evicted to stay within MaxRecords.
func (c *Cache) Evicted() uint64 { return c.evicted.Load() }

// Put inserts r, replacing the record of the same kind and domain, and
// evicts the records expiring first if the cache is over its bound. r
// must not be modified afterwards.
func (c *Cache) Put(r *Record) error { return c.put(r, true) }

// Reschedule replaces r's record with a copy whose Refresh is refresh:
// the scheduler's own bookkeeping, not a new fact about the domain, so
// OnChange is not called. If r is no longer the record held (a writer
// replaced or deleted it meanwhile), nothing changes: the newer record
// keeps its own schedule.
func (c *Cache) Reschedule(r *Record, refresh time.Time) error {
	cp := *r
	cp.Refresh = refresh
	return c.put(&cp, false, r)
}

// Held returns the record the cache holds for r: r itself, or the copy a
// Reschedule of r made (a Scheduler's lease: its handler gets the record
// as it was due); nil if a writer replaced or deleted it meanwhile. A
// handler Reschedules or Deletes what Held returns, not r.
func (c *Cache) Held(r *Record) *Record {
	cur := c.Get(r.Kind, r.Domain)
	if cur == nil {
		return nil
	}
	cp := *cur
	cp.Refresh = r.Refresh
	if cp != *r {
		return nil
	}
	return cur
}

// put inserts r; notify says whether OnChange hears of it (evictions are
// always reported). With expect set, r replaces expect only: if the
// record held is another (or none), put does nothing.
func (c *Cache) put(r *Record, notify bool, expect ...*Record) error {
	if r == nil || r.Kind == "" || r.Domain == "" {
		return errors.New("srccache: record without kind or domain")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	txn := c.db.Txn(true)
	defer txn.Abort()
	old, err := txn.First(tableRecords, indexID, string(r.Kind), r.Domain)
	if err != nil {
		return fmt.Errorf("srccache: %w", err)
	}
	if len(expect) > 0 && (old == nil || old.(*Record) != expect[0]) {
		return nil
	}
	if err := txn.Insert(tableRecords, r); err != nil {
		return fmt.Errorf("srccache: insert %s %s: %w", r.Kind, r.Domain, err)
	}
	n := c.kinds[r.Kind]
	if old == nil {
		n++
	}
	evicted, err := c.evictLocked(txn, r.Kind, n)
	if err != nil {
		return err
	}
	txn.Commit()
	c.setFront(r.Kind, r.Domain, r)
	for _, v := range evicted {
		c.setFront(v.Kind, v.Domain, nil)
	}
	if old == nil {
		c.addCount(r.Kind, 1)
	}
	c.addCount(r.Kind, -len(evicted))
	c.noteEvicted(r.Kind, len(evicted))
	c.changed.Store(true)
	var prev *Record
	if old != nil {
		prev = old.(*Record)
	}
	if c.opts.OnChange != nil && notify {
		c.opts.OnChange(prev, r)
	}
	c.written(evicted)
	return nil
}

// written tells, after a committed write, OnChange and the eviction
// listeners of the records it evicted, and wakes a waiting scheduler;
// c.wmu is held.
func (c *Cache) written(evicted []*Record) {
	if c.opts.OnChange != nil {
		for _, v := range evicted {
			c.opts.OnChange(v, nil)
		}
	}
	for _, v := range evicted {
		for _, f := range c.onEvict[v.Kind] {
			f(v)
		}
		if c.opts.OnEvict != nil {
			c.opts.OnEvict(v)
		}
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// evictLocked deletes, in txn, the records of kind expiring first while
// the kind holds more than its bound (n records with the one just
// inserted, which is never the victim of its own insertion unless it
// expires first).
func (c *Cache) evictLocked(txn *memdb.Txn, kind Kind, n int) ([]*Record, error) {
	var evicted []*Record
	for limit := c.max(kind); n > limit; n-- {
		raw, err := txn.First(tableRecords, indexKindExpires+"_prefix", string(kind))
		if err != nil || raw == nil {
			break
		}
		v := raw.(*Record)
		if err := txn.Delete(tableRecords, v); err != nil {
			return nil, fmt.Errorf("srccache: evict %s %s: %w", v.Kind, v.Domain, err)
		}
		evicted = append(evicted, v)
	}
	return evicted, nil
}

// Delete removes the record of kind for domain, if any.
func (c *Cache) Delete(kind Kind, domain string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	txn := c.db.Txn(true)
	defer txn.Abort()
	raw, err := txn.First(tableRecords, indexID, string(kind), domain)
	if err != nil || raw == nil {
		return err
	}
	if err := txn.Delete(tableRecords, raw); err != nil {
		return fmt.Errorf("srccache: delete %s %s: %w", kind, domain, err)
	}
	txn.Commit()
	c.setFront(kind, domain, nil)
	c.addCount(kind, -1)
	c.changed.Store(true)
	if c.opts.OnChange != nil {
		c.opts.OnChange(raw.(*Record), nil)
	}
	return nil
}

// Due returns up to limit records whose Refresh time is not after now,
// earliest first, and the Refresh time of the first record not returned
// (zero if there is none).
func (c *Cache) Due(now time.Time, limit int) (due []*Record, next time.Time) {
	it, err := c.db.Txn(false).LowerBound(tableRecords, indexRefresh, time.Time{})
	if err != nil {
		return nil, time.Time{}
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*Record)
		if r.Refresh.After(now) || len(due) >= limit {
			return due, r.Refresh
		}
		due = append(due, r)
	}
	return due, time.Time{}
}

// DueKind returns up to limit records of kind whose Refresh time is not
// after now, earliest first, and the Refresh time of the first record of
// kind not returned (zero if there is none).
func (c *Cache) DueKind(kind Kind, now time.Time, limit int) (due []*Record, next time.Time) {
	it, err := c.db.Txn(false).LowerBound(tableRecords, indexKindRefresh, string(kind), time.Time{})
	if err != nil {
		return nil, time.Time{}
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*Record)
		if r.Kind != kind {
			break
		}
		if r.Refresh.After(now) || len(due) >= limit {
			return due, r.Refresh
		}
		due = append(due, r)
	}
	return due, time.Time{}
}

// Wake returns a channel that receives after a Put, so that a scheduler
// waiting for the next refresh time can look again.
func (c *Cache) Wake() <-chan struct{} { return c.wake }
