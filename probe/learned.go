package probe

import (
	"fmt"
	"time"
)

// learnedRec is the learned state of one domain (see LearnedRecord).
type learnedRec = LearnedRecord

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

// SetLearning turns learning on (learn: report or enforce, the default of
// a new cache) or off (learn: off). While it is off, results are kept but
// nothing is learned from them: no record is created, confirmed or
// contradicted, and Learned answers nothing, so a domain probed while
// learning was off is not "learned" once it is turned on. Records learned
// before stay as they are (they lapse after learn_max_age). It is safe to
// call while the cache is in use.
func (c *Cache) SetLearning(on bool) {
	if old := !c.learnOff.Swap(!on); old != on {
		c.log.Info("probe cache: learning changed", "on", on)
	}
}

// LearnMaxAge returns the learn_max_age in use (see SetLearnMaxAge).
func (c *Cache) LearnMaxAge() time.Duration { return time.Duration(c.learnMaxAge.Load()) }

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
	if err != nil || !t.useMX || t.key != t.host || c.learnOff.Load() { // bare domains only, learning on
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

// learnLocked updates the learned state of r's domain; c.mu is held. A
// result with part of the addresses unknown (see AddrsKnown) neither
// teaches nor confirms a learned policy: an address not seen may lack
// STARTTLS, and "encrypt" would then defer mail to it. It still counts
// against a learned policy when an address it saw lacks STARTTLS.
func (c *Cache) learnLocked(r *Result, now time.Time) []Event {
	rec := c.learned[r.Target]
	maxAge := c.LearnMaxAge()
	switch {
	case r.Status == StatusOK && r.Levels[LevelEncrypt].OK && r.Reachable() > 0 && AddrsKnown(r):
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
	case (r.Status == StatusNoSTARTTLS || r.Status == StatusTLSFailed) && rec != nil:
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
