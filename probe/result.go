package probe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status values of a Result: the one-word summary of a probe.
const (
	// StatusOK: every reachable MX address offers STARTTLS with a working
	// handshake, so "encrypt" would deliver (see Levels for verify/secure).
	StatusOK = "ok"
	// StatusNoSTARTTLS: at least one reachable MX address does not offer
	// STARTTLS (or refuses the command), so "encrypt" would defer mail.
	StatusNoSTARTTLS = "no-starttls"
	// StatusTLSFailed: every reachable MX address offers STARTTLS, but at
	// least one's TLS handshake (or the session after it) fails, so
	// "encrypt" would defer mail.
	StatusTLSFailed = "tls-failed"
	// StatusUnreachable: no MX address could be reached (connection refused
	// or timed out, no banner, private address refused) or the domain does
	// not exist (NXDOMAIN) or has no address at all.
	StatusUnreachable = "unreachable"
	// StatusTemporary: a temporary failure (DNS SERVFAIL or timeout, 4xx
	// banner) kept the prober from reaching any MX address; try again later.
	StatusTemporary = "temporary"
	// StatusNoMail: the domain publishes a null MX (RFC 7505): it accepts no
	// mail.
	StatusNoMail = "no-mail"
)

// Postfix TLS security levels judged by a probe, weakest first.
const (
	LevelMay     = "may"
	LevelEncrypt = "encrypt"
	LevelVerify  = "verify"
	LevelSecure  = "secure"
)

// judgedLevels lists the levels a Result judges, weakest first.
var judgedLevels = [...]string{LevelMay, LevelEncrypt, LevelVerify, LevelSecure}

// Levels returns the levels a Result judges, weakest first; the slice is
// the caller's own copy.
func Levels() []string { return slices.Clone(judgedLevels[:]) }

// Error classes of AddrResult.ErrorClass, MXResult.ErrorClass and
// Result.ErrorClass.
const (
	ClassPrivate       = "private"        // address refused: loopback/private/link-local/… and AllowPrivate is off
	ClassNXDomain      = "nxdomain"       // the name does not exist
	ClassNoAddress     = "no-address"     // the MX host has no A/AAAA records
	ClassDNSTemp       = "dns-temp"       // SERVFAIL, REFUSED, timeout, … (temporary)
	ClassConnect       = "connect"        // TCP connection refused or failed
	ClassTimeout       = "timeout"        // a step's deadline passed (connect, banner, …)
	ClassBannerTemp    = "banner-temp"    // 4xx greeting (e.g. 421): temporary
	ClassBannerRefused = "banner-refused" // 5xx greeting: the server refuses mail
	ClassEHLOTemp      = "ehlo-temp"      // 4xx reply to EHLO
	ClassProtocol      = "protocol"       // malformed reply, connection lost, unexpected code
	ClassSTARTTLS      = "starttls"       // STARTTLS offered but the command was refused
	ClassHandshake     = "handshake"      // TLS handshake failed
	ClassAfterTLS      = "after-tls"      // the session failed after the handshake (EHLO over TLS)
)

// Result is the outcome of probing one target. Results are shared between
// concurrent callers and the cache: treat them as read-only.
type Result struct {
	// Target is the canonical next-hop probed (see Canonical).
	Target string `json:"target"`
	// NextHop is the name "secure" certificates must match (the domain, or
	// the host of a [host] target) and Port the TCP port probed.
	NextHop string `json:"nexthop"`
	Port    int    `json:"port"`
	// Time is when the probe started; Expires when it should be replaced.
	Time    time.Time `json:"time"`
	Expires time.Time `json:"expires"`
	// Duration is how long the whole probe took.
	Duration time.Duration `json:"duration_ns"`
	// MX lists the mail exchangers in preference order (one implicit MX for
	// a domain without MX records, the host itself for [host] targets).
	MX []MXResult `json:"mx"`
	// Levels says for "may", "encrypt", "verify" and "secure" whether
	// delivery under that level would succeed to every reachable address.
	Levels map[string]LevelVerdict `json:"levels"`
	// Status is one of the Status* constants; Reason explains it, naming
	// the host and what failed.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// ErrorClass classifies a failure of the target as a whole (DNS).
	ErrorClass string `json:"error_class,omitempty"`
}

// LevelVerdict says whether delivery under one TLS level would succeed.
type LevelVerdict struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// MXResult is one mail exchanger and what its addresses did.
type MXResult struct {
	Host       string `json:"host"`
	Preference uint16 `json:"preference"`
	// Implicit is set for the implicit MX of a domain without MX records.
	Implicit   bool         `json:"implicit,omitempty"`
	Addrs      []AddrResult `json:"addrs"`
	Error      string       `json:"error,omitempty"` // address lookup failure
	ErrorClass string       `json:"error_class,omitempty"`
}

// AddrResult is one SMTP session with one address of an MX host.
type AddrResult struct {
	Addr string `json:"addr"`
	Port int    `json:"port"`
	// Banner is the server's greeting (lines joined by "\n").
	Banner string `json:"banner,omitempty"`
	// Reached: a 220 banner came and EHLO was answered, i.e. Postfix could
	// deliver here at level "may".
	Reached bool `json:"reached"`
	// STARTTLS: the EHLO reply advertised STARTTLS.
	STARTTLS bool `json:"starttls"`
	// TLS is set when a TLS handshake completed.
	TLS *TLSInfo `json:"tls,omitempty"`
	// Duration is how long the session took.
	Duration time.Duration `json:"duration_ns"`
	// Warning notes something odd that did not fail the session.
	Warning string `json:"warning,omitempty"`
	// Error and ErrorClass describe the step that failed, if one did.
	Error      string `json:"error,omitempty"`
	ErrorClass string `json:"error_class,omitempty"`
}

// TLSInfo is what the TLS handshake showed.
type TLSInfo struct {
	Version string     `json:"version"` // Postfix/OpenSSL name: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3
	Cipher  string     `json:"cipher"`
	Chain   []CertInfo `json:"chain"` // as presented, leaf first; at most 10
	// MoreChain counts the certificates presented after the 10 recorded.
	MoreChain int `json:"more_chain,omitempty"`
	// Trusted: the chain verifies against the configured roots at probe
	// time (expiry included); TrustError says why not.
	Trusted    bool   `json:"trusted"`
	TrustError string `json:"trust_error,omitempty"`
	// Verify and Secure are the results of Postfix's "verify"
	// (trusted, name matches the MX host) and "secure" (trusted, name
	// matches the next-hop or a subdomain of it) checks.
	Verify Check `json:"verify"`
	Secure Check `json:"secure"`
}

// Check is the outcome of one certificate check.
type Check struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// CertInfo describes one certificate of the presented chain. What is kept
// is capped (a certificate can list thousands of names): Subject and
// Issuer at 1024 bytes, DNSNames and IPAddresses at 100 each. DNS names
// matching the MX host, the next-hop or a subdomain of it are kept first,
// so that the default verify and secure checks can be judged from the
// record; names longer than a DNS name can be are dropped (counted in
// MoreDNSNames).
type CertInfo struct {
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// CommonName is the subject's CN, the name Postfix checks when the
	// certificate has no DNS names.
	CommonName  string    `json:"common_name,omitempty"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	IPAddresses []string  `json:"ip_addresses,omitempty"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// MoreDNSNames and MoreIPAddresses count the names and addresses of
	// the certificate that were not kept.
	MoreDNSNames    int `json:"more_dns_names,omitempty"`
	MoreIPAddresses int `json:"more_ip_addresses,omitempty"`
	// SHA256 is the certificate fingerprint as Postfix's
	// "fingerprint" level writes it (upper-case hex, colon-separated), and
	// PubkeySHA256 that of its SubjectPublicKeyInfo (Postfix matches
	// either; "" in results recorded before it was added).
	SHA256       string `json:"sha256"`
	PubkeySHA256 string `json:"pubkey_sha256,omitempty"`
}

// SaysNothingOfTLS reports whether r tells nothing about the destination's
// TLS: the probe failed temporarily, reached no address, or found a null MX
// (the domain accepts no mail). Judging a policy by such a result would be
// a guess (engine.Judge gives no finding; `check --probe` says it could not
// check).
func (r *Result) SaysNothingOfTLS() bool {
	return r.Status == StatusTemporary || r.Status == StatusUnreachable || r.Status == StatusNoMail
}

// Fresh reports whether r has not expired at now.
func (r *Result) Fresh(now time.Time) bool { return r != nil && now.Before(r.Expires) }

// Reachable returns how many addresses were reached (banner and EHLO).
func (r *Result) Reachable() int {
	n := 0
	for _, mx := range r.MX {
		for _, a := range mx.Addrs {
			if a.Reached {
				n++
			}
		}
	}
	return n
}

// Where names a of MX host host the way Postfix logs it:
// "mx1.example[192.0.2.1]", with ":port" unless it is 25.
func (a *AddrResult) Where(host string) string { return namaddr(host, a.Addr, a.Port) }

// namaddr formats a host and address the way Postfix logs them.
func namaddr(host, addr string, port int) string {
	s := host + "[" + addr + "]"
	if port != 25 {
		s += ":" + strconv.Itoa(port)
	}
	return s
}

// addrLevels says which levels work at one reached address, and why not.
func addrLevels(a *AddrResult) map[string]string {
	fail := map[string]string{}
	switch {
	case !a.STARTTLS:
		fail[LevelEncrypt] = "no STARTTLS offered"
	case a.ErrorClass != "":
		fail[LevelEncrypt] = a.Error
	case a.TLS == nil:
		fail[LevelEncrypt] = "no TLS session"
	}
	if f, ok := fail[LevelEncrypt]; ok {
		fail[LevelVerify], fail[LevelSecure] = f, f
		return fail
	}
	if !a.TLS.Verify.OK {
		fail[LevelVerify] = a.TLS.Verify.Reason
	}
	if !a.TLS.Secure.OK {
		fail[LevelSecure] = a.TLS.Secure.Reason
	}
	return fail
}

// LevelFailure says why delivery under level (LevelEncrypt, LevelVerify
// or LevelSecure) fails at a, a reached address; "" if it works.
func (a *AddrResult) LevelFailure(level string) string {
	if level == LevelMay {
		return ""
	}
	return addrLevels(a)[level]
}

// maxReasons caps how many failures a reason lists.
const maxReasons = 3

// Judge fills r.Levels, r.Status and r.Reason from r.MX (the prober does;
// a result built by hand, as in tests, needs it too). A DNS-level
// outcome (no-mail, nxdomain, dns-temp) must already be in r.Status.
func (r *Result) Judge() {
	r.Levels = make(map[string]LevelVerdict, len(judgedLevels))
	if r.Status != "" { // decided by DNS
		for _, l := range judgedLevels {
			r.Levels[l] = LevelVerdict{Reason: r.Reason}
		}
		return
	}
	failures := map[string][]string{}
	var unreached []string
	temp := false
	reached := 0
	noSTARTTLS := false // a reached address without STARTTLS, or refusing it
	for _, mx := range r.MX {
		if len(mx.Addrs) == 0 && mx.Error != "" {
			unreached = append(unreached, mx.Host+": "+mx.Error)
			temp = temp || mx.ErrorClass == ClassDNSTemp
		}
		for i := range mx.Addrs {
			a := &mx.Addrs[i]
			where := namaddr(mx.Host, a.Addr, a.Port)
			if !a.Reached {
				unreached = append(unreached, where+": "+a.Error)
				temp = temp || a.ErrorClass == ClassBannerTemp || a.ErrorClass == ClassEHLOTemp
				continue
			}
			reached++
			noSTARTTLS = noSTARTTLS || !a.STARTTLS || a.ErrorClass == ClassSTARTTLS
			for l, why := range addrLevels(a) {
				failures[l] = append(failures[l], where+": "+why)
			}
		}
	}
	if reached == 0 {
		r.Status = StatusUnreachable
		if temp {
			r.Status = StatusTemporary
		}
		r.Reason = "no MX address reachable: " + joinReasons(unreached)
		if len(unreached) == 0 {
			r.Reason = "no MX address to probe"
		}
		for _, l := range judgedLevels {
			r.Levels[l] = LevelVerdict{Reason: r.Reason}
		}
		return
	}
	for _, l := range judgedLevels {
		if f := failures[l]; len(f) > 0 {
			r.Levels[l] = LevelVerdict{Reason: joinReasons(f)}
		} else {
			r.Levels[l] = LevelVerdict{OK: true}
		}
	}
	if r.Levels[LevelEncrypt].OK {
		r.Status = StatusOK
		if !r.Levels[LevelSecure].OK {
			r.Reason = "secure would fail: " + r.Levels[LevelSecure].Reason
		}
		if !r.Levels[LevelVerify].OK {
			r.Reason = "verify would fail: " + r.Levels[LevelVerify].Reason
		}
	} else {
		r.Status = StatusNoSTARTTLS
		if !noSTARTTLS {
			r.Status = StatusTLSFailed
		}
		r.Reason = r.Levels[LevelEncrypt].Reason
	}
	if len(unreached) > 0 {
		if r.Reason != "" {
			r.Reason += "; "
		}
		r.Reason += "not reached (not counted): " + joinReasons(unreached)
	}
}

// JoinReasons joins failure reasons with "; ", listing at most 3 and
// counting the rest ("; and 5 more"), as a Result's reasons are written.
func JoinReasons(rs []string) string { return joinReasons(rs) }

func joinReasons(rs []string) string {
	if len(rs) <= maxReasons {
		return strings.Join(rs, "; ")
	}
	return strings.Join(rs[:maxReasons], "; ") + fmt.Sprintf("; and %d more", len(rs)-maxReasons)
}
