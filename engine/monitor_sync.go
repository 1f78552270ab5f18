package engine

import (
	"cmp"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Keys of the watch records (srccache.Watch): what is monitored, by
// whom it was asked for.
const (
	outboundPrefix = "outbound:"
	mtastsPrefix   = "mta-sts:" // srccache.MTASTSWatchKey
)

// newWindow bounds the watch records of outbound entries written ahead
// of their first check: the others wait in the backlog (a pointer each)
// and get theirs as the window empties, so that a table of 500,000
// enforced entries costs neither 500,000 records at start (seconds of
// writes, over a gigabyte of indexes) nor a burst of probes.
const newWindow = 1000

func outboundKey(key string) string { return outboundPrefix + key }

// Sync makes the watch records match what is monitored now: the table's
// probeable outbound entries and recipients:/senders: floors, and the
// domains whose cached MTA-STS policy enforces or tests. A key new to
// the monitor, or whose policy changed or turned testing, is checked soon
// (see schedule); a key no longer monitored loses its record and is not
// probed again. The first Sync (at start) also reschedules soon the
// records restored overdue, so that a restart does not probe them all at
// once. Call it after Register and after each table reload.
func (m *Monitor) Sync() {
	if m.watches == nil {
		return
	}
	now := m.Now()
	have := map[string]*srccache.Record{}
	fresh := map[string]bool{} // records awaiting their first check
	for _, r := range m.watches.ByKind(srccache.KindWatch) {
		have[r.Domain] = r
		if r.Checked.IsZero() {
			fresh[r.Domain] = true
		}
	}
	m.mu.Lock()
	first := !m.synced
	m.synced = true
	requeued := maps.Clone(m.requeued)
	m.mu.Unlock()
	// waiting reports whether w's record was evicted and, its policy the
	// same, comes back when its next check is due (dueRequeuedLocked).
	waiting := func(w watch) bool {
		r, ok := requeued[w.key]
		return ok && !changed(r, w)
	}
	var soon []pending
	var backlog []*store.Entry
	// consider returns whether w needs writing now (new, changed, or
	// restored overdue at start) and forgets its key from have.
	consider := func(w watch) bool {
		prev, ok := have[w.key]
		delete(have, w.key)
		if !ok && waiting(w) || ok && !changed(prev, w) && !(first && prev.Refresh.Before(now)) {
			return false
		}
		soon = append(soon, pending{w: w, prev: prev})
		return true
	}
	addr := map[string]watch{}
	if s := m.Engine.Store(); s != nil {
		for _, e := range s.Table().Outbound {
			if !probeable(e) {
				continue
			}
			w := outboundWatch(e)
			if _, ok := have[w.key]; !ok && !e.Testing && !waiting(w) {
				backlog = append(backlog, e) // a record when the window has room
				continue
			}
			consider(w)
		}
		for _, w := range addressWatches(s) {
			addr[w.key] = w
			consider(w)
		}
	}
	for _, r := range m.watches.ByKind(srccache.KindMTASTS) {
		if w, ok := m.sourceWatch(r, now); ok {
			consider(w)
		}
	}
	gone := make([]string, 0, len(have))
	for key := range have {
		gone = append(gone, key)
		delete(fresh, key)
	}
	m.mu.Lock()
	m.addr = addr
	m.backlog = backlog
	m.fresh = fresh
	m.slots = slots{start: now.Add(m.firstDelay),
		gap: passGap(len(soon)+len(backlog), time.Duration(spanShare*float64(m.Interval)), m.MaxPerMinute, m.maxGap)}
	// Testing keys first, then those never probed (the backlog's among
	// them), then the least recently probed.
	sortPending(soon)
	k := slices.IndexFunc(soon, func(p pending) bool { return !p.w.e.Testing && probedAt(p) != 0 })
	if k < 0 {
		k = len(soon)
	}
	recs := m.slots.records(m, soon[:k])
	recs = append(recs, m.fromBacklogLocked()...)
	recs = append(recs, m.slots.records(m, soon[k:])...)
	m.mu.Unlock()
	// One transaction: a first Sync of a large table writes many records.
	if err := m.watches.PutAll(srccache.KindWatch, recs, gone); err != nil {
		m.Logger.Error("monitor: watch records not written", "error", err)
	}
}

// topUp writes the records of the next backlog entries once the window of
// records awaiting their first check is half empty.
func (m *Monitor) topUp() {
	m.mu.Lock()
	var recs []*srccache.Record
	if len(m.fresh) <= newWindow/2 {
		recs = m.fromBacklogLocked()
	}
	m.mu.Unlock()
	if len(recs) > 0 {
		if err := m.watches.PutAll(srccache.KindWatch, recs, nil); err != nil {
			m.Logger.Error("monitor: watch records not written", "error", err)
		}
	}
}

// fromBacklogLocked takes backlog entries until newWindow records await
// their first check, and returns their records in the next slots, and
// those of evicted entries now due (see dueRequeuedLocked). An entry that got a record
// meanwhile (a kick) or left the table is skipped. m.mu is held.
func (m *Monitor) fromBacklogLocked() []*srccache.Record {
	var take []pending
	add := func(e *store.Entry) {
		if e == nil || !probeable(e) {
			return
		}
		w := outboundWatch(e)
		if m.watches.Get(srccache.KindWatch, w.key) != nil || m.fresh[w.key] {
			return
		}
		m.fresh[w.key] = true
		take = append(take, pending{w: w})
	}
	for len(m.backlog) > 0 && len(m.fresh) < newWindow {
		add(m.backlog[0])
		m.backlog[0] = nil
		m.backlog = m.backlog[1:]
	}
	out := m.slots.records(m, take)
	return append(out, m.dueRequeuedLocked()...)
}

// SyncSource follows one domain's MTA-STS record r after a fetch or
// refresh: a new enforce or testing policy (or one whose id or mode
// changed) is checked soon; a domain left without one is no longer
// monitored.
func (m *Monitor) SyncSource(r *srccache.Record) {
	if m.watches == nil || r == nil {
		return
	}
	now := m.Now()
	w, ok := m.sourceWatch(r, now)
	if !ok {
		_ = m.watches.Delete(srccache.KindWatch, srccache.MTASTSWatchKey(r.Domain))
		return
	}
	prev := m.watches.Get(srccache.KindWatch, w.key)
	if prev != nil && !changed(prev, w) {
		return
	}
	m.mu.Lock()
	recs := (&slots{start: now.Add(m.firstDelay), gap: m.maxGap}).records(m, []pending{{w: w, prev: prev}})
	m.mu.Unlock()
	_ = m.watches.Put(recs[0])
}

// sourceIdle: an MTA-STS domain nobody looked up for this long (its
// record unchecked: lookups have it rechecked hourly) is not probed, for
// no mail to it can be stuck; a lookup brings its watch back.
const sourceIdle = 7 * 24 * time.Hour

// sourceWatch is the watch of a domain's MTA-STS record r, if r holds a
// valid enforce or testing policy, the domain was looked up within
// sourceIdle, and neither the table nor DANE decides it (then Postfix
// never gets the policy: judging it would alert falsely).
func (m *Monitor) sourceWatch(r *srccache.Record, now time.Time) (watch, bool) {
	if !r.Valid(now) || NotWatched(m.Engine, m.watches, r, now) != "" {
		return watch{}, false
	}
	e := SourceEntry(r)
	if e == nil {
		return watch{}, false
	}
	w := outboundWatch(e)
	w.key = srccache.MTASTSWatchKey(r.Domain) // not the table entry of the same key, if there is one
	w.id = r.MTASTS.ID
	return w, true
}

// sameSubject reports whether the verdict of watch p (what its last probe
// found) is one of w's policy: not for another policy or MTA-STS id.
func sameSubject(p *srccache.Watch, w watch) bool {
	return p.Policy == w.e.Policy.Text && p.ID == w.id
}

// NotWatched says why the monitor does not check the domain of r, an
// MTA-STS record of c, under its policy ("" if nothing keeps it from
// it): the table or DANE decides the domain (Postfix never gets the
// policy), or nobody looked it up for sourceIdle.
func NotWatched(e *Engine, c *srccache.Cache, r *srccache.Record, now time.Time) string {
	if s := e.Store(); s != nil {
		if a, err := s.Resolve(store.MapPolicy, r.Domain, nil); err == nil && (a.Step == store.StepExact || a.Step == store.StepParent) {
			return "the table decides this domain"
		}
	}
	if d := c.Get(srccache.KindDANE, r.Domain); d.Valid(now) && (d.Answer != "" || d.Temp) {
		return "DANE decides this domain"
	}
	if now.Sub(r.Checked) > sourceIdle {
		return "not looked up for 7 days"
	}
	return ""
}

// changed reports whether w is not what the watch record prev was written
// for: another policy, or testing where it was not.
func changed(prev *srccache.Record, w watch) bool {
	p := prev.Watch
	return p == nil || p.Policy != w.e.Policy.Text || p.ID != w.id || (w.e.Testing && !p.Testing)
}

// resolve returns the watch of a watch record's key as the table and the
// source cache say now; ok is false for a key no longer monitored.
func (m *Monitor) resolve(key string) (watch, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.resolveLocked(key)
}

// resolveLocked is resolve with m.mu held.
func (m *Monitor) resolveLocked(key string) (watch, bool) {
	switch {
	case strings.HasPrefix(key, outboundPrefix):
		s := m.Engine.Store()
		if s == nil {
			return watch{}, false
		}
		e := s.OutboundByKey(strings.TrimPrefix(key, outboundPrefix))
		if e == nil || !probeable(e) {
			return watch{}, false
		}
		return outboundWatch(e), true
	case strings.HasPrefix(key, mtastsPrefix):
		return m.sourceWatch(m.watches.Get(srccache.KindMTASTS, strings.TrimPrefix(key, mtastsPrefix)), m.Now())
	}
	w, ok := m.addr[key]
	return w, ok
}

// pending is a key to check soon, with its record (nil for a new key).
type pending struct {
	w    watch
	prev *srccache.Record
	// evicted: prev was evicted; the new record is kept as one never
	// checked, so that it is not the next to go before its check.
	evicted bool
}

// slots are the times of first checks: the i-th at a random time within
// [start+i·gap, start+(i+1)·gap).
type slots struct {
	start time.Time
	gap   time.Duration
	next  int
}

// probedAt is when p's key was last probed (UnixNano; 0: never).
func probedAt(p pending) int64 {
	if p.prev == nil || p.prev.Watch == nil || p.prev.Watch.Probed.IsZero() {
		return 0
	}
	return p.prev.Watch.Probed.UnixNano()
}

// sortPending orders keys to check soon: testing ones first, then those
// never probed, then the least recently probed (table order among
// equals).
func sortPending(soon []pending) {
	slices.SortStableFunc(soon, func(a, b pending) int {
		if a.w.e.Testing != b.w.e.Testing {
			if a.w.e.Testing {
				return -1
			}
			return 1
		}
		return cmp.Compare(probedAt(a), probedAt(b))
	})
}

// records returns the records of soon in the next slots. A record keeps
// what its last probe found, unless that was under another policy.
func (sl *slots) records(m *Monitor, soon []pending) []*srccache.Record {
	out := make([]*srccache.Record, 0, len(soon))
	for _, p := range soon {
		at := sl.start.Add(time.Duration(sl.next) * sl.gap)
		if sl.gap > 0 {
			at = at.Add(rand.N(sl.gap))
		}
		sl.next++
		// Never checked: kept longer than any checked record (see watchKeep).
		r := &srccache.Record{Kind: srccache.KindWatch, Domain: p.w.key, Refresh: at, Expires: at.Add(2 * m.keep())}
		wt := &srccache.Watch{}
		if p.prev != nil {
			r.Fetched, r.Checked, r.Error = p.prev.Fetched, p.prev.Checked, p.prev.Error
			if !p.evicted {
				r.Expires = p.prev.Expires
			}
			if p.prev.Watch != nil && sameSubject(p.prev.Watch, p.w) {
				*wt = *p.prev.Watch
			}
		}
		wt.Policy, wt.Level, wt.Testing, wt.ID = p.w.e.Policy.Text, CheckLevel(p.w.e.Policy), p.w.e.Testing, p.w.id
		r.Watch = wt
		out = append(out, r)
	}
	return out
}

// passGap is the time between the first checks of n keys: spread evenly
// over span, but at most maxGap apart and no closer than perMinute (when
// positive) allows.
func passGap(n int, span time.Duration, perMinute int, maxGap time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	gap := min(span/time.Duration(n), maxGap)
	if perMinute > 0 {
		gap = max(gap, time.Minute/time.Duration(perMinute))
	}
	return gap
}
