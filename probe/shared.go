package probe

import (
	"time"
)

// Shared is what the cache tells a fleet of daemons, and takes from it
// (see MergeLearned and PutShared). Both hooks are called outside the
// cache's locks and must not block.
type Shared struct {
	// OnLearned hears every learned record created or changed here (a
	// domain learned, confirmed, or contradicted); a record dropped (a
	// downgrade after learn_max_age, an eviction) is not shared.
	OnLearned func(LearnedRecord)
	// OnResult hears every result of a probe made here.
	OnResult func(*Result)
}

// SetShared installs the fleet hooks; call it before the cache is used.
func (c *Cache) SetShared(s Shared) { c.shared = s }

// notifyShared tells the fleet hooks of a local Put: the result, and the
// learned record when the Put replaced it (records are replaced, never
// changed in place, so a new pointer is a change).
func (c *Cache) notifyShared(r *Result, before, after *learnedRec) {
	if c.shared.OnResult != nil {
		c.shared.OnResult(r)
	}
	if c.shared.OnLearned != nil && after != nil && after != before {
		c.shared.OnLearned(*after)
	}
}

// MergeLearned merges a learned record another daemon shared into this
// cache: the earliest first-learned time wins, the latest confirmation and
// contradiction are kept. A record that has lapsed (not confirmed within
// learn_max_age), or any record while learning is off, changes nothing.
// It returns the merged record, whether this cache changed, and whether
// the merged record says more than rec: then the fleet should hear it
// (OnLearned is not called here). Times compare as instants, so equal
// records never bounce between nodes.
func (c *Cache) MergeLearned(rec LearnedRecord) (merged LearnedRecord, changed, news bool) {
	key, err := Canonical(rec.Domain)
	if err != nil || c.learnOff.Load() || validLearned(&rec) != nil {
		return rec, false, false
	}
	rec.Domain = key
	now := c.cfg.Now()
	maxAge := c.LearnMaxAge()
	// A record from the future or without a first-learned time would
	// outlive (or outrank) every real one.
	if now.Sub(rec.LastConfirmed) > maxAge || rec.LastConfirmed.After(now.Add(time.Minute)) ||
		rec.FirstLearned.IsZero() || rec.FirstLearned.After(rec.LastConfirmed) {
		return rec, false, false
	}
	var ev *Event
	c.mu.Lock()
	cur := c.learned[key]
	merged = rec
	if cur != nil && now.Sub(cur.LastConfirmed) <= maxAge {
		merged = mergeLearned(*cur, rec)
	}
	changed = cur == nil || !sameLearned(merged, *cur)
	if changed {
		c.learned[key] = &merged
		if cur == nil && len(c.learned) > c.cfg.MaxEntries {
			ev = c.evictLearnedLocked(key, now)
		}
	}
	c.mu.Unlock()
	if changed {
		c.dirty.Store(true)
	}
	if ev != nil {
		c.emit([]Event{*ev})
	}
	return merged, changed, !sameLearned(merged, rec)
}

// sameLearned compares two records, their times as instants.
func sameLearned(a, b learnedRec) bool {
	return a.Domain == b.Domain && a.FirstLearned.Equal(b.FirstLearned) && a.LastConfirmed.Equal(b.LastConfirmed) &&
		a.LastContradicted.Equal(b.LastContradicted) && a.ContradictedBy == b.ContradictedBy
}

func mergeLearned(a, b learnedRec) learnedRec {
	m := a
	if b.FirstLearned.Before(m.FirstLearned) {
		m.FirstLearned = b.FirstLearned
	}
	if b.LastConfirmed.After(m.LastConfirmed) {
		m.LastConfirmed = b.LastConfirmed
	}
	if b.LastContradicted.After(m.LastContradicted) {
		m.LastContradicted, m.ContradictedBy = b.LastContradicted, b.ContradictedBy
	}
	return m
}

// PutShared stores a result another daemon's probe gave, unless this
// cache holds a newer one, so that this daemon need not probe the target
// again while it is fresh. It teaches no learned policy: learned records
// are shared on their own (MergeLearned). It reports whether r was stored.
func (c *Cache) PutShared(r *Result) bool {
	if r == nil || validResult(r) != nil {
		return false
	}
	key, err := Canonical(r.Target)
	if err != nil {
		return false
	}
	now := c.cfg.Now()
	if !r.Expires.After(now) {
		return false
	}
	cp := *r
	cp.Target = key
	if limit := cp.Time.Add(c.cfg.TTL); cp.Expires.After(limit) {
		cp.Expires = limit
	}
	c.mu.Lock()
	old := c.entries[key]
	if old != nil && !cp.Time.After(old.res.Time) {
		c.mu.Unlock()
		return false
	}
	e := &entry{res: &cp}
	if old != nil {
		e.lastUsed.Store(old.lastUsed.Load())
	} else {
		e.lastUsed.Store(now.UnixNano())
	}
	c.entries[key] = e
	if old == nil && len(c.entries) > c.cfg.MaxEntries {
		c.evictResultLocked(key)
	}
	c.mu.Unlock()
	c.dirty.Store(true)
	return true
}

// LearnedExpiry is when rec stops answering under this cache's
// learn_max_age: the lifetime a fleet gives the shared copy.
func (c *Cache) LearnedExpiry(rec LearnedRecord) time.Time {
	return rec.LastConfirmed.Add(c.LearnMaxAge())
}
