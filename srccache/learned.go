package srccache

import (
	"context"
	"fmt"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// SetLearnMaxAge sets how long a learned "encrypt" is kept without a probe
// confirming it, as ProbesOptions.LearnMaxAge does (d <= 0: the default).
// It applies at once to every learned record, those learned before
// included (their expiry is rewritten), so a table reload that changes
// learn_max_age takes effect at once. It is safe to call while the cache
// is in use.
func (p *Probes) SetLearnMaxAge(d time.Duration) {
	if d <= 0 {
		d = DefaultLearnMaxAge
	}
	if old := time.Duration(p.learnMaxAge.Swap(int64(d))); old != d {
		p.log.Info("probe cache: learn_max_age changed", "from", old, "to", d)
		p.reexpire(d)
	}
}

// reexpire rewrites the learned records whose expiry is not the one of
// maxAge.
func (p *Probes) reexpire(maxAge time.Duration) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if time.Duration(p.learnMaxAge.Load()) != maxAge {
		return // a later SetLearnMaxAge does it
	}
	for _, r := range p.c.ByKind(KindLearned) {
		if nr := learnedRecord(*r.Learned, maxAge); !nr.Expires.Equal(r.Expires) || nr.Why != r.Why {
			p.putLearned(nr)
		}
	}
}

// SetLearning turns learning on (learn: report or enforce, the default)
// or off (learn: off). While it is off, results are kept but nothing is
// learned from them: no record is created, confirmed or contradicted, and
// Learned answers nothing, so a domain probed while learning was off is
// not "learned" once it is turned on. Records learned before stay as they
// are (they lapse after learn_max_age). It is safe to call while the cache
// is in use.
func (p *Probes) SetLearning(on bool) {
	if old := !p.learnOff.Swap(!on); old != on {
		p.log.Info("probe cache: learning changed", "on", on)
	}
}

// LearnMaxAge returns the learn_max_age in use (see SetLearnMaxAge).
func (p *Probes) LearnMaxAge() time.Duration { return time.Duration(p.learnMaxAge.Load()) }

// Learned implements the engine's learned-policy source. It returns level
// "encrypt" for a bare domain a probe has shown offering STARTTLS with a
// working handshake on every reachable MX, as long as the last such probe
// is no older than learn_max_age — a later probe finding STARTTLS missing
// does not change that (STRIPTLS defence). why explains the answer for
// logs and `query --explain`. A domain without a fresh result gets a probe
// scheduled, so call it only when learning is on (learn: report or
// enforce); Learned itself never waits, and for a domain in canonical
// form whose result is fresh it allocates nothing.
func (p *Probes) Learned(domain string) (level string, why string, ok bool) {
	key, bare := probe.BareDomain(domain)
	if !bare || p.learnOff.Load() {
		return "", "", false
	}
	now := p.o.Now()
	if r := p.c.Get(KindProbe, key); r == nil {
		p.schedule(key)
	} else {
		p.touch(key, now)
		if !r.Probe.Fresh(now) {
			p.schedule(key)
		}
	}
	l := p.c.Get(KindLearned, key)
	if l == nil || now.Sub(l.Learned.LastConfirmed) > p.LearnMaxAge() {
		return "", "", false
	}
	return probe.LevelEncrypt, l.Why, true
}

// learnedRecord is the record of a learned state under maxAge: it lapses
// (the KindLearned handler deletes it, Load skips it) once maxAge has
// passed since the last confirmation, and eviction takes the least
// recently confirmed first. Why is the answer's explanation, written once
// here so that a lookup builds no string.
func learnedRecord(l probe.LearnedRecord, maxAge time.Duration) *Record {
	until := l.LastConfirmed.Add(maxAge)
	why := fmt.Sprintf("learned: every reachable MX offered STARTTLS (first seen %s, last confirmed %s)",
		l.FirstLearned.UTC().Format(time.RFC3339), l.LastConfirmed.UTC().Format(time.RFC3339))
	if l.LastContradicted.After(l.LastConfirmed) {
		why += fmt.Sprintf("; probe at %s found %s — kept until %s (STRIPTLS defence)",
			l.LastContradicted.UTC().Format(time.RFC3339), l.ContradictedBy, until.UTC().Format(time.RFC3339))
	}
	return &Record{Kind: KindLearned, Domain: l.Domain, Fetched: l.FirstLearned, Checked: l.LastConfirmed,
		Expires: until, Refresh: until.Add(time.Second), Answer: probe.LevelEncrypt, Why: why, Learned: &l}
}

// putLearned writes a learned record; p.wmu is held.
func (p *Probes) putLearned(r *Record) {
	if err := p.c.Put(r); err != nil {
		p.log.Error("probe cache: learned policy not stored", "domain", r.Domain, "error", err)
	}
}

// learn updates the learned state of r's domain from r; cur is the
// domain's learned record (nil if none) and p.wmu is held. A result with
// part of the addresses unknown (see probe.AddrsKnown) neither teaches nor
// confirms a learned policy: an address not seen may lack STARTTLS, and
// "encrypt" would then defer mail to it. It still counts against a
// learned policy when an address it saw lacks STARTTLS.
func (p *Probes) learn(r *probe.Result, cur *Record, now time.Time) []probe.Event {
	var rec *probe.LearnedRecord
	if cur != nil {
		rec = cur.Learned
	}
	maxAge := p.LearnMaxAge()
	switch {
	case r.Status == probe.StatusOK && r.Levels[probe.LevelEncrypt].OK && r.Reachable() > 0 && probe.AddrsKnown(r):
		if rec == nil || r.Time.Sub(rec.LastConfirmed) > maxAge {
			p.putLearned(learnedRecord(probe.LearnedRecord{Domain: r.Target, FirstLearned: r.Time, LastConfirmed: r.Time}, maxAge))
			return []probe.Event{{Time: now, Kind: probe.EventLearned, Target: r.Target,
				Reason: "every reachable MX offers STARTTLS: learned policy encrypt"}}
		}
		if r.Time.After(rec.LastConfirmed) {
			nr := *rec
			nr.LastConfirmed = r.Time
			p.putLearned(learnedRecord(nr, maxAge))
		}
	case (r.Status == probe.StatusNoSTARTTLS || r.Status == probe.StatusTLSFailed) && rec != nil:
		if r.Time.Sub(rec.LastConfirmed) > maxAge {
			if err := p.c.Delete(KindLearned, r.Target); err != nil {
				p.log.Error("probe cache: learned policy not dropped", "domain", r.Target, "error", err)
			}
			return []probe.Event{{Time: now, Kind: probe.EventUnlearned, Target: r.Target,
				Reason: fmt.Sprintf("%s; STARTTLS last confirmed %s, more than learn_max_age %s ago: learned encrypt dropped",
					r.Reason, rec.LastConfirmed.UTC().Format(time.RFC3339), maxAge)}}
		}
		nr := *rec
		nr.LastContradicted, nr.ContradictedBy = r.Time, r.Reason
		p.putLearned(learnedRecord(nr, maxAge))
		return []probe.Event{{Time: now, Kind: probe.EventDowngradeRefused, Target: r.Target,
			Reason: fmt.Sprintf("%s; learned encrypt kept until %s (STARTTLS last confirmed %s): possible STRIPTLS attack or a changed MX",
				r.Reason, rec.LastConfirmed.Add(maxAge).UTC().Format(time.RFC3339),
				rec.LastConfirmed.UTC().Format(time.RFC3339))}}
	}
	return nil
}

// lapse is the scheduler's KindLearned handler, run when a learned record
// was last confirmed learn_max_age ago: the record no longer answers and
// is dropped (an EventUnlearned).
func (p *Probes) lapse(_ context.Context, key string, r *Record) {
	if r == nil {
		return
	}
	now := p.o.Now()
	maxAge := p.LearnMaxAge()
	p.wmu.Lock()
	cur := p.c.Get(KindLearned, key)
	if cur == nil || cur.Learned != r.Learned {
		p.wmu.Unlock()
		return // replaced meanwhile: its own Refresh brings it back
	}
	if now.Sub(cur.Learned.LastConfirmed) <= maxAge {
		_ = p.c.Reschedule(cur, cur.Learned.LastConfirmed.Add(maxAge).Add(time.Second))
		p.wmu.Unlock()
		return
	}
	err := p.c.Delete(KindLearned, key)
	p.wmu.Unlock()
	if err != nil {
		p.log.Error("probe cache: lapsed learned policy not dropped", "domain", key, "error", err)
		return
	}
	reason := fmt.Sprintf("STARTTLS last confirmed %s, more than learn_max_age %s ago: learned encrypt lapsed",
		cur.Learned.LastConfirmed.UTC().Format(time.RFC3339), maxAge)
	if c := cur.Learned; c.LastContradicted.After(c.LastConfirmed) {
		reason = fmt.Sprintf("%s (last probe at %s: %s)", reason, c.LastContradicted.UTC().Format(time.RFC3339), c.ContradictedBy)
	}
	p.emit(probe.Event{Time: now, Kind: probe.EventUnlearned, Target: key, Reason: reason})
}

// learnedEvicted hears, under the cache's write lock, a learned record
// evicted to stay within the kind's bound (the least recently confirmed).
// Dropping one still in force undoes a learned "encrypt" before
// learn_max_age, against the STRIPTLS defence: an EventLearnedEvicted,
// emitted by the writer once the lock is released. A lapsed one goes
// silently.
func (p *Probes) learnedEvicted(r *Record) {
	now := p.o.Now()
	maxAge := p.LearnMaxAge()
	until := r.Learned.LastConfirmed.Add(maxAge)
	if !now.Before(until) {
		p.log.Debug("probe cache full: lapsed learned policy dropped", "domain", r.Domain, "last_confirmed", r.Learned.LastConfirmed)
		return
	}
	max := p.c.max(KindLearned)
	ev := probe.Event{Time: now, Kind: probe.EventLearnedEvicted, Target: r.Domain,
		Reason: fmt.Sprintf("probe cache full (%d learned policies): learned encrypt, the least recently confirmed, dropped before learn_max_age %s "+
			"(STARTTLS last confirmed %s, it would have lasted until %s); a flood of newly learned domains can cause this. "+
			"Add an explicit outbound entry for the domain if encryption to it must stay required",
			max, maxAge, r.Learned.LastConfirmed.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))}
	p.pmu.Lock()
	p.pendingE = append(p.pendingE, ev)
	p.pmu.Unlock()
}

// takeEvicted returns the eviction events heard since the last call.
func (p *Probes) takeEvicted() []probe.Event {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	evs := p.pendingE
	p.pendingE = nil
	return evs
}
