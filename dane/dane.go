// Package dane decides whether a destination domain publishes DANE TLSA
// records for SMTP (RFC 7672) as a DNSSEC-validating resolver reports
// them: the MX RRset and each MX host's _25._tcp TLSA RRset must be
// authenticated (the AD bit, as the Postfix SMTP client trusts it with
// smtp_dns_support_level = dnssec).
package dane

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
)

// Levels a Result can give.
const (
	LevelDANEOnly = "dane-only" // every MX host has usable authenticated TLSA records
	LevelDANE     = "dane"      // some do
)

// ErrTemp is a lookup that failed where DNSSEC says records may exist (a
// signed MX host whose TLSA lookup failed): the caller must defer, never
// answer a weaker policy (RFC 7672 §2.2).
var ErrTemp = errors.New("DANE lookup failed in a signed zone")

// MaxMX bounds the MX hosts looked at, as the prober does.
const MaxMX = 10

// TLSA is one TLSA record.
type TLSA struct {
	Usage        uint8  `json:"usage"`
	Selector     uint8  `json:"selector"`
	MatchingType uint8  `json:"matching_type"`
	Data         string `json:"data"` // hex
	Usable       bool   `json:"usable"`
}

// String returns the record in presentation form.
func (t TLSA) String() string {
	return fmt.Sprintf("%d %d %d %s", t.Usage, t.Selector, t.MatchingType, t.Data)
}

// Host is what was found for one MX host.
type Host struct {
	Name       string `json:"name"`
	AddrSecure bool   `json:"addr_secure"`    // its address records are authenticated
	TLSASecure bool   `json:"tlsa_secure"`    // its TLSA RRset (or its denial) is authenticated
	TLSA       []TLSA `json:"tlsa,omitempty"` // as published
	Usable     int    `json:"usable"`         // usable authenticated TLSA records
	Error      string `json:"error,omitempty"`
}

// Result is the DANE status of a domain.
type Result struct {
	Domain   string        `json:"domain"`
	MXSecure bool          `json:"mx_secure"` // the MX RRset (or its denial) is authenticated
	Implicit bool          `json:"implicit"`  // no MX: the domain itself (RFC 7672 §2.2.1)
	Hosts    []Host        `json:"hosts,omitempty"`
	Level    string        `json:"level"` // LevelDANEOnly, LevelDANE or "": no DANE policy
	Why      string        `json:"why"`
	TTL      time.Duration `json:"ttl"` // how long the answer may be cached
}

// Resolver looks up DANE status through a validating resolver.
type Resolver struct {
	DNS *dnsq.Client
}

// TTL bounds: answers are cached between a minute and an hour.
const (
	minTTL = time.Minute
	maxTTL = time.Hour
)

// Lookup returns the DANE status of domain. The error is nil for every
// answer DNS gave, secure or not; it wraps ErrTemp when a signed MX
// host's TLSA lookup failed, and dnsq.ErrTemp when the MX lookup itself
// failed (then nothing is known about DNSSEC, and no DANE policy is
// claimed: the caller treats it as no DANE policy, uncached).
func (r *Resolver) Lookup(ctx context.Context, domain string) (*Result, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	res := &Result{Domain: domain, TTL: maxTTL}
	ans, err := r.DNS.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, fmt.Errorf("dane: MX of %s: %w", domain, err)
	}
	res.MXSecure = ans.AD
	switch {
	case !ans.AD:
		res.Why = "MX records of " + domain + " are not DNSSEC-authenticated"
		return res, nil
	case ans.NXDOMAIN:
		res.Why = domain + " does not exist (authenticated NXDOMAIN)"
		return res, nil
	}
	var hosts []string
	null := false
	for _, rr := range ans.RRs {
		res.lowerTTL(rr)
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		h := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if h == "" {
			null = true
			continue
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		if null {
			res.Why = domain + " accepts no mail (null MX)"
			return res, nil
		}
		res.Implicit = true
		hosts = []string{domain}
	}
	if len(hosts) > MaxMX {
		hosts = hosts[:MaxMX]
	}
	usable := 0
	for _, h := range hosts {
		host, err := r.host(ctx, h, res)
		res.Hosts = append(res.Hosts, host)
		if err != nil {
			return res, err
		}
		if host.Usable > 0 {
			usable++
		}
	}
	switch {
	case usable == len(hosts):
		res.Level = LevelDANEOnly
		res.Why = fmt.Sprintf("every MX host (%d) has usable authenticated TLSA records", usable)
	case usable > 0:
		res.Level = LevelDANE
		res.Why = fmt.Sprintf("%d of %d MX hosts have usable authenticated TLSA records", usable, len(hosts))
	default:
		res.Why = "no MX host has usable authenticated TLSA records"
	}
	return res, nil
}

// host looks up one MX host: its address records first, as Postfix does
// (RFC 7672 §2.2.2: TLSA records of a host whose address is not secure
// are not used), then _25._tcp.<host> TLSA.
func (r *Resolver) host(ctx context.Context, name string, res *Result) (Host, error) {
	h := Host{Name: name}
	secure := false
	var addrErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := r.DNS.Query(ctx, name, qt)
		if err != nil {
			addrErr = err
			continue
		}
		if ans.AD && !ans.NXDOMAIN {
			secure = true
		}
	}
	h.AddrSecure = secure
	if !secure {
		if addrErr != nil {
			h.Error = addrErr.Error()
		}
		return h, nil
	}
	ans, err := r.DNS.Query(ctx, "_25._tcp."+name, dns.TypeTLSA)
	if err != nil {
		h.Error = err.Error()
		return h, fmt.Errorf("%w: TLSA of %s: %w", ErrTemp, name, err)
	}
	h.TLSASecure = ans.AD
	for _, rr := range ans.RRs {
		t, ok := rr.(*dns.TLSA)
		if !ok {
			continue
		}
		res.lowerTTL(rr)
		rec := TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: strings.ToLower(t.Certificate)}
		rec.Usable = ans.AD && Usable(rec)
		if rec.Usable {
			h.Usable++
		}
		h.TLSA = append(h.TLSA, rec)
	}
	return h, nil
}

// Usable reports whether a TLSA record can authenticate an SMTP server
// (RFC 7672 §3.1.3): usage DANE-TA(2) or DANE-EE(3) (PKIX-TA and PKIX-EE
// are unusable for SMTP), a known selector, and a known matching type
// whose digest has the right length.
func Usable(t TLSA) bool {
	if t.Usage != 2 && t.Usage != 3 || t.Selector > 1 {
		return false
	}
	b, err := hex.DecodeString(t.Data)
	if err != nil || len(b) == 0 {
		return false
	}
	switch t.MatchingType {
	case 0:
		return true
	case 1:
		return len(b) == 32
	case 2:
		return len(b) == 64
	}
	return false
}

func (res *Result) lowerTTL(rr dns.RR) {
	ttl := time.Duration(rr.Header().Ttl) * time.Second
	ttl = max(ttl, minTTL)
	if ttl < res.TTL {
		res.TTL = ttl
	}
}
