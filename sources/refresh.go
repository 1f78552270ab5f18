package sources

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Retry and negative-caching intervals.
const (
	retryAfter  = time.Minute      // after a failed lookup with nothing usable cached
	retryCached = 5 * time.Minute  // after a failed refresh of a record still valid
	noPolicyTTL = 15 * time.Minute // a domain without an MTA-STS TXT record
	txtRecheck  = time.Hour        // how often the TXT id of a cached policy is checked
	minMaxAge   = time.Minute      // a policy is kept at least this long (max_age 0)
)

// timeFmt is how explanations show times.
const timeFmt = "2006-01-02 15:04:05Z07:00"

// refreshDANE looks up domain's DANE status and returns the record to
// keep. old is the current record, or nil.
func (m *Manager) refreshDANE(ctx context.Context, domain string, old *srccache.Record) *srccache.Record {
	now := time.Now()
	res, err := m.cfg.DANE.Lookup(ctx, domain)
	r := &srccache.Record{Kind: srccache.KindDANE, Domain: domain, Checked: now}
	switch {
	case err == nil:
		r.DANE, r.Fetched = res, now
		r.Expires = now.Add(res.TTL)
		r.Refresh = now.Add(res.TTL * 4 / 5)
		r.Answer = res.Level
		r.Why = "DANE: " + res.Why + "; valid until " + r.Expires.UTC().Format(timeFmt)
		return r
	case errors.Is(err, dane.ErrTemp) || old != nil && knownDANE(old):
		// DNSSEC says records exist (this lookup found a signed host, or
		// the last one found TLSA records): defer until a lookup works.
		r.DANE, r.Temp, r.Error = res, true, err.Error()
		r.Expires = now.Add(retryAfter)
		r.Refresh = r.Expires
		r.Why = "DANE: lookup failed where DNSSEC says records exist, mail is deferred: " + err.Error()
		return r
	}
	// The MX lookup failed: nothing is known about DNSSEC. A record
	// still valid is kept; otherwise no DANE policy, retried soon.
	if old.Valid(now) {
		return keep(old, now, now.Add(retryAfter), err)
	}
	r.Error = err.Error()
	r.Expires = now.Add(retryAfter)
	r.Refresh = r.Expires
	r.Why = "DANE: lookup failed, no DANE policy known: " + err.Error()
	return r
}

// refreshMTASTS checks domain's _mta-sts TXT record and fetches its policy
// when the id changed, half its max_age has passed, or none is cached
// (RFC 8461 §5.1). A failed fetch keeps a cached policy until it expires
// (§5); with none cached the domain has no policy.
func (m *Manager) refreshMTASTS(ctx context.Context, domain string, old *srccache.Record) *srccache.Record {
	now := time.Now()
	var cached *mtasts.Policy
	if old.Valid(now) && old.MTASTS != nil {
		cached = old.MTASTS.Policy
	}
	id, err := m.cfg.MTASTS.TXT(ctx, domain)
	switch {
	case err != nil && cached != nil:
		// §8.3: removing the TXT record does not end a cached policy.
		return keep(old, now, minTime(now.Add(retryCached), old.Expires), err)
	case errors.Is(err, mtasts.ErrNoRecord):
		return &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Checked: now, Fetched: now,
			Expires: now.Add(noPolicyTTL), Refresh: now.Add(noPolicyTTL), MTASTS: &srccache.MTASTS{},
			Why: "MTA-STS: no policy (" + err.Error() + ")"}
	case err != nil:
		return &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Checked: now, Error: err.Error(),
			Expires: now.Add(retryAfter), Refresh: now.Add(retryAfter), MTASTS: &srccache.MTASTS{},
			Why: "MTA-STS: TXT lookup failed, no policy known: " + err.Error()}
	}
	if cached != nil && old.MTASTS.ID == id && now.Sub(old.Fetched) < cached.MaxAgeDuration()/2 {
		return keep(old, now, minTime(now.Add(txtRecheck), old.Expires), nil)
	}
	p, err := m.cfg.MTASTS.Fetch(ctx, domain)
	if err == nil {
		err = checkAnswer(p)
	}
	if err != nil {
		if cached != nil {
			return keep(old, now, minTime(now.Add(retryCached), old.Expires), err)
		}
		return &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Checked: now, Error: err.Error(),
			Expires: now.Add(retryCached), Refresh: now.Add(retryCached), MTASTS: &srccache.MTASTS{ID: id},
			Why: "MTA-STS: TXT id " + id + " but no policy could be fetched, none known: " + err.Error()}
	}
	maxAge := max(p.MaxAgeDuration(), minMaxAge)
	r := &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Checked: now, Fetched: now,
		Expires: now.Add(maxAge), Refresh: now.Add(max(min(txtRecheck, maxAge/2), minMaxAge/2)),
		MTASTS: &srccache.MTASTS{ID: id, Policy: p}, Answer: p.PostfixPolicy()}
	r.Why = mtastsWhy(r)
	if p.Mode == mtasts.ModeTesting {
		m.log.Info("MTA-STS policy in testing mode: not enforced", "domain", domain, "id", id, "mx", strings.Join(p.MX, ","))
	}
	return r
}

// checkAnswer rejects an enforced policy whose Postfix policy Postfix
// would not accept (the parser already restricts mx patterns to host
// name characters, so this is a safety net).
func checkAnswer(p *mtasts.Policy) error {
	if a := p.PostfixPolicy(); a != "" {
		if _, err := store.ParsePolicy(a); err != nil {
			return fmt.Errorf("policy maps to %q: %w", a, err)
		}
	}
	return nil
}

// mtastsWhy explains an MTA-STS record: id, mode, patterns, expiry.
func mtastsWhy(r *srccache.Record) string {
	p := r.MTASTS.Policy
	s := fmt.Sprintf("MTA-STS: policy id %s, mode %s, mx %s, max_age %d, fetched %s, valid until %s",
		r.MTASTS.ID, p.Mode, strings.Join(p.MX, " "), p.MaxAge, r.Fetched.UTC().Format(timeFmt), r.Expires.UTC().Format(timeFmt))
	switch p.Mode {
	case mtasts.ModeTesting:
		s += " (testing: not enforced)"
	case mtasts.ModeNone:
		s += " (none: no enforcement)"
	}
	return s
}

// keep returns a copy of old checked at now, refreshed next at refresh,
// with err as its last error (nil: the check succeeded).
func keep(old *srccache.Record, now, refresh time.Time, err error) *srccache.Record {
	r := *old
	r.Checked, r.Refresh, r.Error = now, refresh, ""
	if err != nil {
		r.Error = err.Error()
	}
	return &r
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
