package dane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
)

var digest = strings.Repeat("ab", 32) // a SHA-256 digest

func newResolver(t *testing.T) (*sourcetest.Resolver, *Resolver) {
	t.Helper()
	r := sourcetest.NewResolver(t)
	return r, &Resolver{DNS: &dnsq.Client{Server: r.Addr, Timeout: time.Second}}
}

// mx publishes domain's MX host with an address, and TLSA records if tlsa
// is not empty.
func mx(t *testing.T, r *sourcetest.Resolver, domain, host string, tlsa ...string) {
	t.Helper()
	r.Add(t, domain+". 300 IN MX 10 "+host+".")
	r.Add(t, host+". 300 IN A 192.0.2.1")
	for _, rec := range tlsa {
		r.Add(t, "_25._tcp."+host+". 600 IN TLSA "+rec)
	}
}

func lookup(t *testing.T, d *Resolver, domain string) *Result {
	t.Helper()
	res, err := d.Lookup(context.Background(), domain)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", domain, err)
	}
	return res
}

func TestLookupLevels(t *testing.T) {
	r, d := newResolver(t)
	// RFC 7672 §2.2: every MX host with usable authenticated TLSA.
	mx(t, r, "all.test", "mx1.all.test", "3 1 1 "+digest)
	mx(t, r, "all.test", "mx2.all.test", "2 0 1 "+digest)
	// Some MX hosts: dane (Postfix authenticates those, may for the rest).
	mx(t, r, "some.test", "mx1.some.test", "3 1 1 "+digest)
	mx(t, r, "some.test", "mx2.some.test")
	// Signed, no TLSA at all.
	mx(t, r, "none.test", "mx1.none.test")
	// RFC 7672 §3.1.3: PKIX-TA/PKIX-EE usages are unusable for SMTP; so is
	// a SHA-256 digest of the wrong length.
	mx(t, r, "pkix.test", "mx1.pkix.test", "1 1 1 "+digest, "3 1 1 abcd")
	// Unsigned MX RRset: DANE does not apply (RFC 7672 §2.2.1).
	mx(t, r, "unsigned.test", "mx1.signed-host.test", "3 1 1 "+digest)
	// Signed MX, but the MX host's zone is not signed: its TLSA records
	// cannot be trusted (§2.2.2).
	mx(t, r, "hostunsigned.test", "mx1.plain.test", "3 1 1 "+digest)
	for _, z := range []string{"all.test", "some.test", "none.test", "pkix.test", "signed-host.test", "hostunsigned.test"} {
		r.Sign(z)
	}
	for _, c := range []struct{ domain, level string }{
		{"all.test", LevelDANEOnly},
		{"some.test", LevelDANE},
		{"none.test", ""},
		{"pkix.test", ""},
		{"unsigned.test", ""},
		{"hostunsigned.test", ""},
	} {
		res := lookup(t, d, c.domain)
		if res.Level != c.level {
			t.Errorf("%s: level %q (%s), want %q", c.domain, res.Level, res.Why, c.level)
		}
	}
	res := lookup(t, d, "all.test")
	if !res.MXSecure || len(res.Hosts) != 2 || res.Hosts[0].Usable != 1 || !res.Hosts[0].TLSASecure {
		t.Errorf("all.test: %+v", res)
	}
	if res.TTL != 300*time.Second {
		t.Errorf("TTL %v, want the smallest record TTL 300s", res.TTL)
	}
	if res := lookup(t, d, "unsigned.test"); res.MXSecure || res.Hosts != nil {
		t.Errorf("unsigned.test looked further than its MX: %+v", res)
	}
}

// RFC 7672 §2.2.1: a domain without MX records (authenticated NODATA) is
// its own MX host, and its TLSA records are those of the domain.
func TestLookupImplicitMX(t *testing.T) {
	r, d := newResolver(t)
	r.Add(t, "implicit.test. 300 IN A 192.0.2.7")
	r.Add(t, "_25._tcp.implicit.test. 300 IN TLSA 3 1 1 "+digest)
	r.Sign("implicit.test")
	res := lookup(t, d, "implicit.test")
	if !res.Implicit || res.Level != LevelDANEOnly || len(res.Hosts) != 1 || res.Hosts[0].Name != "implicit.test" {
		t.Fatalf("implicit MX: %+v", res)
	}
	// Null MX (RFC 7505): no mail, no DANE.
	r.Add(t, "nullmx.test. 300 IN MX 0 .")
	r.Sign("nullmx.test")
	if res := lookup(t, d, "nullmx.test"); res.Level != "" || res.Implicit {
		t.Fatalf("null MX: %+v", res)
	}
}

// RFC 7672 §2.2: a failed TLSA lookup of a signed MX host must defer, not
// fall back to a weaker policy; a failed MX lookup tells nothing about
// DNSSEC and is not ErrTemp.
func TestLookupFailures(t *testing.T) {
	r, d := newResolver(t)
	mx(t, r, "servfail.test", "mx1.servfail.test", "3 1 1 "+digest)
	r.Sign("servfail.test")
	r.Fail("_25._tcp.mx1.servfail.test", dns.TypeTLSA, dns.RcodeServerFailure)
	_, err := d.Lookup(context.Background(), "servfail.test")
	if !errors.Is(err, ErrTemp) {
		t.Fatalf("TLSA SERVFAIL in a signed zone: err %v, want ErrTemp", err)
	}

	r.Fail("mxfail.test", dns.TypeMX, dns.RcodeServerFailure)
	_, err = d.Lookup(context.Background(), "mxfail.test")
	if err == nil || errors.Is(err, ErrTemp) || !errors.Is(err, dnsq.ErrTemp) {
		t.Fatalf("MX SERVFAIL: err %v, want dnsq.ErrTemp only", err)
	}

	// An unsigned host's TLSA failure is not looked up at all.
	mx(t, r, "unsignedfail.test", "mx1.plain2.test")
	r.Sign("unsignedfail.test")
	r.Fail("_25._tcp.mx1.plain2.test", dns.TypeTLSA, dns.RcodeServerFailure)
	if res := lookup(t, d, "unsignedfail.test"); res.Level != "" {
		t.Fatalf("unsigned host: %+v", res)
	}
	if n := r.Count("_25._tcp.mx1.plain2.test", dns.TypeTLSA); n != 0 {
		t.Fatalf("TLSA of an unsigned host queried %d times", n)
	}
}

func TestUsable(t *testing.T) {
	for _, c := range []struct {
		t    TLSA
		want bool
	}{
		{TLSA{3, 1, 1, digest, false}, true},
		{TLSA{2, 0, 2, strings.Repeat("cd", 64), false}, true},
		{TLSA{3, 0, 0, "3082", false}, true},
		{TLSA{0, 1, 1, digest, false}, false}, // PKIX-TA
		{TLSA{1, 1, 1, digest, false}, false}, // PKIX-EE
		{TLSA{3, 2, 1, digest, false}, false}, // unknown selector
		{TLSA{3, 1, 3, digest, false}, false}, // unknown matching type
		{TLSA{3, 1, 1, digest[:62], false}, false},
		{TLSA{3, 1, 1, "zz", false}, false},
	} {
		if got := Usable(c.t); got != c.want {
			t.Errorf("Usable(%s) = %v, want %v", c.t, got, c.want)
		}
	}
}
