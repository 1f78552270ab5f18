package srccache

import (
	"encoding/json"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// Shared is what Probes tells a fleet of daemons, and takes from it (see
// MergeLearned and PutShared). Both hooks are called outside the cache's
// locks and must not block.
type Shared struct {
	// OnLearned hears every learned record created or changed here (a
	// domain learned, confirmed, or contradicted); a record dropped (a
	// downgrade after learn_max_age, a lapse, an eviction) is not shared.
	OnLearned func(probe.LearnedRecord)
	// OnResult hears every result of a probe made here.
	OnResult func(*probe.Result)
}

// SetShared installs the fleet hooks; call it before the cache is used.
func (p *Probes) SetShared(s Shared) { p.shared = s }

// notifyShared tells the fleet hooks of a local Put: the result, and the
// learned record when the Put replaced it (records are replaced, never
// changed in place, so a new record is a change).
func (p *Probes) notifyShared(r *probe.Result, before, after *Record) {
	if p.shared.OnResult != nil {
		p.shared.OnResult(r)
	}
	if p.shared.OnLearned != nil && after != nil && after != before {
		p.shared.OnLearned(*after.Learned)
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
func (p *Probes) MergeLearned(rec probe.LearnedRecord) (merged probe.LearnedRecord, changed, news bool) {
	key, err := probe.Canonical(rec.Domain)
	if err != nil || p.learnOff.Load() || validLearned(&rec) != nil || !encodable(rec) {
		return rec, false, false
	}
	rec.Domain = key
	now := p.o.Now()
	maxAge := p.LearnMaxAge()
	// A record from the future or without a first-learned time would
	// outlive (or outrank) every real one.
	if now.Sub(rec.LastConfirmed) > maxAge || rec.LastConfirmed.After(now.Add(time.Minute)) ||
		rec.FirstLearned.IsZero() || rec.FirstLearned.After(rec.LastConfirmed) {
		return rec, false, false
	}
	p.wmu.Lock()
	var cur *probe.LearnedRecord
	if r := p.c.Get(KindLearned, key); r != nil {
		cur = r.Learned
	}
	merged = rec
	if cur != nil && now.Sub(cur.LastConfirmed) <= maxAge {
		merged = mergeLearned(*cur, rec)
	}
	changed = cur == nil || !sameLearned(merged, *cur)
	if changed {
		p.putLearned(learnedRecord(merged, maxAge))
	}
	p.wmu.Unlock()
	p.emit(p.takeEvicted()...)
	return merged, changed, !sameLearned(merged, rec)
}

// encodable reports whether v, from a fleet peer, can be written to the
// snapshot: a time outside the years 0–9999 would make every Save fail.
func encodable(v any) bool {
	_, err := json.Marshal(v)
	return err == nil
}

// sameLearned compares two records, their times as instants.
func sameLearned(a, b probe.LearnedRecord) bool {
	return a.Domain == b.Domain && a.FirstLearned.Equal(b.FirstLearned) && a.LastConfirmed.Equal(b.LastConfirmed) &&
		a.LastContradicted.Equal(b.LastContradicted) && a.ContradictedBy == b.ContradictedBy
}

func mergeLearned(a, b probe.LearnedRecord) probe.LearnedRecord {
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
// cache holds a newer one or it is dated more than a minute ahead, so
// that this daemon need not probe the target again while it is fresh. It
// teaches no learned policy: learned records are shared on their own
// (MergeLearned). It reports whether r was stored.
func (p *Probes) PutShared(r *probe.Result) bool {
	if r == nil || validResult(r) != nil || !encodable(r) {
		return false
	}
	now := p.o.Now()
	// A result from the future would outrank every real one and stay
	// fresh past its TTL (see MergeLearned).
	if !r.Expires.After(now) || r.Time.After(now.Add(time.Minute)) {
		return false
	}
	cp := *r
	if limit := cp.Time.Add(p.o.TTL); cp.Expires.After(limit) {
		cp.Expires = limit
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if old := p.c.Get(KindProbe, cp.Target); old != nil && !cp.Time.After(old.Probe.Time) {
		return false
	}
	p.putResult(&cp, now)
	return true
}

// LearnedExpiry is when rec stops answering under this cache's
// learn_max_age: the lifetime a fleet gives the shared copy.
func (p *Probes) LearnedExpiry(rec probe.LearnedRecord) time.Time {
	return rec.LastConfirmed.Add(p.LearnMaxAge())
}
