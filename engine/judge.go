package engine

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// certWarning is how long before a certificate's expiry an enforced
// verify/secure destination raises an event.
const certWarning = 14 * 24 * time.Hour

// Finding is what one probe says about one outbound entry.
type Finding struct {
	Entry  *store.Entry
	Result *probe.Result
	Level  string // the probe level checked: encrypt, verify or secure
	OK     bool   // Postfix delivers under Level (see deliver), perhaps not through every MX
	Kind   events.Kind
	Reason string // the event text ("" when OK and nothing expires)
	// Why is, for a deferral (OutboundProbeFailed, not OK), what fails
	// at the addresses tried, without the sentence around it.
	Why string
}

// CheckLevel is the probe level whose verdict Judge starts from, or ""
// when the prober cannot tell whether enforcing p delivers.
func CheckLevel(p *store.Policy) string {
	switch p.Level {
	case store.LevelVerify:
		return probe.LevelVerify
	case store.LevelSecure:
		return probe.LevelSecure
	case store.LevelEncrypt, store.LevelDaneOnly, store.LevelFingerprint:
		// fingerprint: Judge also checks match= against the leaf.
		// dane-only: STARTTLS with a working handshake is necessary, not
		// sufficient: Postfix also needs usable (DNSSEC-validated) TLSA
		// records matching the server, and the prober looks up neither.
		// A passing probe therefore does not show that dane-only delivers.
		return probe.LevelEncrypt
	}
	// none and may enforce nothing. dane neither: without usable TLSA
	// records Postfix falls back to may and delivers (in cleartext if need
	// be); with them it authenticates the server against them, which the
	// prober, doing no TLSA or DNSSEC lookups, cannot judge.
	return ""
}

// probeable reports whether the monitor checks e: an outbound entry that
// enforces TLS or is being tested, for a key the prober can reach (not a
// .parent wildcard).
func probeable(e *store.Entry) bool {
	return CheckLevel(e.Policy) != "" && !strings.HasPrefix(e.Key, ".")
}

// Judge turns a probe result for entry e into findings: whether enforcing
// e delivers (an OutboundProbeFailed when Postfix would defer the mail, a
// BackupMXFailed when it delivers through one MX while another cannot
// meet the policy: see deliver), and whether a verify/secure certificate
// expires soon.
// Temporary probe failures (DNS SERVFAIL, 4xx banners) and unreachable
// destinations yield nothing: they say nothing about the destination's TLS
// (Postfix defers that mail whatever the policy).
//
// Beyond the level, Judge checks at every reached address what the
// policy's attributes demand and the record can tell (see attrFailures):
// protocols=, fingerprint match=, and verify/secure match= (or tafile=,
// which replaces the trust in system roots). It raises a finding only for
// a failure it is sure of. It cannot judge ciphers= and exclude= (the
// prober offers the suites Postfix offers by default with OpenSSL 3, not
// a policy's own list) nor servername= (the prober sends no
// SNI, so a server choosing its certificate by SNI may show Postfix
// another one).
func Judge(e *store.Entry, r *probe.Result, now time.Time) []Finding {
	return judge(e, r, now, outboundWatch(e).subj)
}

// judge is Judge with the findings worded for subj.
func judge(e *store.Entry, r *probe.Result, now time.Time, subj subject) []Finding {
	level := CheckLevel(e.Policy)
	if level == "" || r == nil || r.SaysNothingOfTLS() {
		return nil
	}
	match, ownMatch := certMatch(e.Policy)
	base := level
	if ownMatch {
		// The probe's verify and secure verdicts apply the default match
		// lists and the system roots: start from encrypt instead.
		base = probe.LevelEncrypt
	}
	ac := newAttrCheck(e.Policy, r, match, ownMatch)
	var tried []triedAddr
	for _, mx := range r.MX {
		for i := range mx.Addrs {
			a := &mx.Addrs[i]
			if !a.Reached {
				continue // not counted, as in the probe's own verdicts
			}
			why := a.LevelFailure(base)
			if why == "" {
				why = ac.failure(a, mx.Host)
			}
			tried = append(tried, triedAddr{pref: mx.Preference, where: a.Where(mx.Host), why: why})
		}
	}
	d := deliver(tried)
	why := probe.JoinReasons(d.failing)
	if len(tried) == 0 {
		// A record without its addresses (written by another tool or
		// trimmed): the level verdict is all there is.
		v, ok := r.Levels[base]
		d.delivered = ok && v.OK
		why = cmp.Or(v.Reason, r.Reason)
	}
	f := Finding{Entry: e, Result: r, Level: level, OK: d.delivered, Kind: events.OutboundProbeFailed}
	var out []Finding
	switch {
	case !d.delivered:
		f.Why = why
		if e.Testing {
			f.Reason = fmt.Sprintf("enforcing %s for %s would defer mail: %s", e.Policy.Text, subj.noun, why)
		} else {
			f.Reason = fmt.Sprintf("%s is deferred: policy %s cannot be met: %s", subj.mail, e.Policy.Text, why)
		}
		out = append(out, f)
	case len(d.failing) > 0:
		f.Kind = events.BackupMXFailed
		which := "a backup MX of " + e.Key + " cannot meet"
		if !d.backupOnly {
			which = "some MX addresses of " + e.Key + " cannot meet"
		}
		if e.Testing {
			f.Reason = fmt.Sprintf("enforcing %s for %s: %s it (%s); mail would still be delivered through %s, and deferred while that is down",
				e.Policy.Text, subj.noun, which, why, d.via)
		} else {
			f.Reason = fmt.Sprintf("%s policy %s: %s; mail is delivered through %s, and deferred while that is down",
				which, e.Policy.Text, why, d.via)
		}
		out = append(out, f)
	}
	if level == probe.LevelVerify || level == probe.LevelSecure {
		for _, mx := range r.MX {
			for _, a := range mx.Addrs {
				if a.TLS == nil || len(a.TLS.Chain) == 0 {
					continue
				}
				na := a.TLS.Chain[0].NotAfter
				if left := na.Sub(now); left > 0 && left < certWarning {
					days := fmt.Sprintf("%d days", int(left.Hours()/24)+1)
					if left < 24*time.Hour {
						days = "1 day"
					}
					out = append(out, Finding{Entry: e, Result: r, Level: level, OK: f.OK, Kind: events.CertExpiring,
						Reason: fmt.Sprintf("certificate of %s[%s] for %s expires %s (in %s); under %s mail will then be deferred",
							mx.Host, a.Addr, e.Key, na.UTC().Format("2006-01-02"), days, e.Policy.Level)})
				}
			}
		}
	}
	return out
}

// certMatch returns, for a verify or secure policy whose certificate check
// differs from the probe's (match= set, or tafile= replacing the system
// roots), the match list to check the leaf's names against (the level's
// default when match= is unset; several match attributes add up, as in
// smtp_tls_policy.c) and ok true.
func certMatch(p *store.Policy) (match string, ok bool) {
	var def string
	switch p.Level {
	case store.LevelVerify:
		def = probe.DefaultVerifyMatch
	case store.LevelSecure:
		def = probe.DefaultSecureMatch
	default:
		return "", false
	}
	match = attrValues(p, "match", ":")
	if _, tafile := p.Attr("tafile"); match == "" && !tafile {
		return "", false
	}
	return cmp.Or(match, def), true
}

// attrValues joins the values of every attribute name of p with sep.
func attrValues(p *store.Policy, name, sep string) string {
	var vs []string
	for _, a := range p.Attrs {
		if a.Name == name && a.Value != "" {
			vs = append(vs, a.Value)
		}
	}
	return strings.Join(vs, sep)
}

// attrCheck checks, at a reached address that completed a TLS
// handshake, what a policy demands beyond the level verdict: the TLS
// versions protocols= lets Postfix offer, the fingerprint level's match=
// digests, and, when ownMatch, trust and the leaf's names against the
// list match (see certMatch). What the record cannot tell (a server above
// protocols='s maximum, an unknown fingerprint digest, names beyond the
// recorded ones) is no failure.
type attrCheck struct {
	r                *probe.Result
	match            string
	ownMatch, tafile bool
	checkProtocols   bool
	lo, hi           uint16
	fingerprints     string
}

func newAttrCheck(p *store.Policy, r *probe.Result, match string, ownMatch bool) *attrCheck {
	c := &attrCheck{r: r, match: match, ownMatch: ownMatch}
	if protocols, ok := p.Attr("protocols"); ok {
		var err error
		// The table loader rejects a protocols= value it cannot read.
		c.lo, c.hi, err = store.ProtocolRange(protocols)
		c.checkProtocols = err == nil
	}
	if p.Level == store.LevelFingerprint {
		c.fingerprints = attrValues(p, "match", "|")
	}
	// With tafile= Postfix trusts the chain by those anchors, not the
	// system roots the prober uses: only the names can be judged.
	_, c.tafile = p.Attr("tafile")
	return c
}

// failure returns why a (of MX host) fails for certain, else "".
func (c *attrCheck) failure(a *probe.AddrResult, host string) string {
	if !a.Reached || a.TLS == nil {
		return "" // the level verdict covers these
	}
	var why string
	if c.checkProtocols {
		why = failure(a.TLS.CheckProtocols(c.lo, c.hi))
	}
	if why == "" && c.fingerprints != "" {
		why = failure(a.TLS.CheckFingerprint(c.fingerprints))
	}
	if why == "" && c.ownMatch {
		why = failure(a.TLS.CheckMatch(c.match, host, c.r.NextHop, !c.tafile))
	}
	return why
}

// failure is the reason of a check known to fail, else "".
func failure(c probe.Check, known bool) string {
	if known && !c.OK {
		return c.Reason
	}
	return ""
}
