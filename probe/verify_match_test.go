package probe

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// Postfix's match= lists for verify and secure (smtp_tls_verify_cert_match,
// smtp_tls_secure_cert_match; TLS_README "Mandatory server certificate
// verification"), resolved for the MX host mx1.example.com and the next-hop
// example.com, against the names of a trusted leaf.
func TestCheckMatch(t *testing.T) {
	const mx, nexthop = "mx1.example.com", "example.com"
	tests := []struct {
		name  string
		names []string // leaf DNS names
		cn    string   // leaf CommonName, checked only without DNS names
		match string
		want  bool
	}{
		{"hostname", []string{"mx1.example.com"}, "", "hostname", true},
		{"HOSTNAME is case-insensitive", []string{"mx1.example.com"}, "", "HOSTNAME", true},
		{"hostname, other host", []string{"mx2.example.com"}, "", "hostname", false},
		{"hostname, wildcard", []string{"*.example.com"}, "", "hostname", true},
		{"nexthop", []string{"example.com"}, "", "nexthop", true},
		{"nexthop is not the MX name", []string{"mx1.example.com"}, "", "nexthop", false},
		{"nexthop, cert for another domain", []string{"mail.hoster.net"}, "", "nexthop", false},
		{"dot-nexthop", []string{"mx1.example.com"}, "", "dot-nexthop", true},
		{"dot-nexthop is not the domain itself", []string{"example.com"}, "", "dot-nexthop", false},
		{"secure default", []string{"example.com"}, "", DefaultSecureMatch, true},
		{"secure default, subdomain", []string{"a.b.example.com"}, "", DefaultSecureMatch, true},
		{"secure default, look-alike", []string{"badexample.com"}, "", DefaultSecureMatch, false},
		{"literal name", []string{"mail.hoster.net"}, "", "mail.hoster.net", true},
		{"literal name, other name", []string{"mail.hoster.net"}, "", "smtp.hoster.net", false},
		{"literal name, wildcard cert", []string{"*.hoster.net"}, "", "mail.hoster.net", true},
		{".domain: subdomains", []string{"mail.hoster.net"}, "", ".hoster.net", true},
		{".domain: not the domain", []string{"hoster.net"}, "", ".hoster.net", false},
		{"list: second matches", []string{"mail.hoster.net"}, "", "nexthop:.hoster.net", true},
		{"list: none matches", []string{"mail.hoster.net"}, "", "hostname:nexthop:dot-nexthop", false},
		{"empty items skipped", []string{"example.com"}, "", "::nexthop:", true},
		{"CommonName without DNS names", nil, "mx1.example.com", "hostname", true},
		{"no names at all", nil, "", "hostname", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// PubkeySHA256 as every record made since CommonName is kept.
			ti := &TLSInfo{Trusted: true, Chain: []CertInfo{{DNSNames: tc.names, CommonName: tc.cn, PubkeySHA256: "AB:CD"}}}
			c, known := ti.CheckMatch(tc.match, mx, nexthop, true)
			if !known || c.OK != tc.want {
				t.Fatalf("CheckMatch(%q) = %+v, known %v; want OK %v, known", tc.match, c, known, tc.want)
			}
			if !c.OK && !strings.Contains(c.Reason, "do not match") {
				t.Errorf("reason %q", c.Reason)
			}
		})
	}
}

// A leaf without names recorded by a version that kept neither its
// CommonName nor its public-key digest (a probe cache from before) may
// have had a CommonName Postfix would match: no verdict, not a failure.
func TestCheckMatchOldRecord(t *testing.T) {
	ti := &TLSInfo{Trusted: true, Chain: []CertInfo{{SHA256: "AB:CD"}}}
	if c, known := ti.CheckMatch("hostname", "mx1.example.com", "example.com", true); known {
		t.Errorf("old record without names: %+v, known; want unknown", c)
	}
}

func TestCheckMatchTrust(t *testing.T) {
	ti := &TLSInfo{Trusted: false, TrustError: "x509: certificate signed by unknown authority",
		Chain: []CertInfo{{DNSNames: []string{"example.com"}}}}
	c, known := ti.CheckMatch("nexthop", "mx1.example.com", "example.com", true)
	if !known || c.OK || !strings.Contains(c.Reason, "not trusted: x509: certificate signed by unknown authority") {
		t.Errorf("untrusted chain: %+v, known %v", c, known)
	}
	// tafile=: the trust anchors decide, not the system roots; names only.
	if c, known := ti.CheckMatch("nexthop", "mx1.example.com", "example.com", false); !known || !c.OK {
		t.Errorf("trust not required: %+v, known %v", c, known)
	}
	if c, known := (&TLSInfo{Trusted: true}).CheckMatch("nexthop", "mx", "example.com", true); !known || c.OK {
		t.Errorf("no chain: %+v, known %v", c, known)
	}
}

// A leaf whose names were capped: names matching the MX host, next-hop and
// its subdomains are kept first, so those strategies stay exact; a
// literal name absent from the kept ones cannot be judged.
func TestCheckMatchCappedNames(t *testing.T) {
	ti := &TLSInfo{Trusted: true, Chain: []CertInfo{{DNSNames: []string{"a.hoster.net", "b.hoster.net"}, MoreDNSNames: 5000}}}
	for _, tc := range []struct {
		match     string
		ok, known bool
	}{
		{"hostname", false, true},
		{"nexthop:dot-nexthop", false, true},
		{"mx1.example.com", false, true}, // the MX host written out
		{"b.hoster.net", true, true},
		{"z.hoster.net", false, false},
		{".other.net", false, false},
		{"hostname:z.hoster.net", false, false},
	} {
		c, known := ti.CheckMatch(tc.match, "mx1.example.com", "example.com", true)
		if c.OK != tc.ok || known != tc.known {
			t.Errorf("CheckMatch(%q) = %+v, known %v; want OK %v, known %v", tc.match, c, known, tc.ok, tc.known)
		}
		if !c.OK && known && !strings.Contains(c.Reason, "and 5000 more]") {
			t.Errorf("CheckMatch(%q): reason %q does not count the names not kept", tc.match, c.Reason)
		}
	}
}

// Postfix's fingerprint level (TLS_README "Certificate fingerprint
// verification"; tls_dane_add_fpt_digests): each match= digest is tried as
// the certificate's and as its public key's digest, hex in any case with
// or without colons, several separated by '|'.
func TestCheckFingerprint(t *testing.T) {
	cert := probetest.SelfSigned(t, []string{"mx1.example.com"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	ci := certInfo(leaf, nil)
	pk := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if ci.PubkeySHA256 != colonHex(pk[:]) || len(ci.PubkeySHA256) != 95 {
		t.Fatalf("PubkeySHA256 = %q", ci.PubkeySHA256)
	}
	plain := func(fp string) string { return strings.ToLower(strings.ReplaceAll(fp, ":", "")) }
	wrong := strings.Repeat("AB:", 31) + "AB"
	sha1 := strings.Repeat("AB:", 19) + "AB"
	ti := &TLSInfo{Chain: []CertInfo{ci}}
	tests := []struct {
		match     string
		ok, known bool
	}{
		{ci.SHA256, true, true},
		{ci.PubkeySHA256, true, true},
		{plain(ci.SHA256), true, true},
		{plain(ci.PubkeySHA256), true, true},
		{wrong, false, true},
		{wrong + "|" + ci.PubkeySHA256, true, true},
		{wrong + "|" + sha1, false, true},
		{sha1, false, false}, // another smtp_tls_fingerprint_digest
		{"", false, false},
	}
	for _, tc := range tests {
		c, known := ti.CheckFingerprint(tc.match)
		if c.OK != tc.ok || known != tc.known {
			t.Errorf("CheckFingerprint(%q) = %+v, known %v; want OK %v, known %v", tc.match, c, known, tc.ok, tc.known)
		}
	}
	// A record from before PubkeySHA256: only a certificate match tells.
	old := &TLSInfo{Chain: []CertInfo{{SHA256: ci.SHA256}}}
	if c, known := old.CheckFingerprint(wrong); known {
		t.Errorf("old record: %+v, known", c)
	}
	if c, known := old.CheckFingerprint(ci.SHA256); !known || !c.OK {
		t.Errorf("old record, certificate digest: %+v, known %v", c, known)
	}
	if c, known := (&TLSInfo{}).CheckFingerprint(ci.SHA256); !known || c.OK {
		t.Errorf("no certificate: %+v, known %v", c, known)
	}
}

// A certificate with thousands of names: what is recorded is capped, the
// names matching the MX host and next-hop are kept first, and the probe's
// own verify and secure checks still see every name.
func TestInspectTLSCapsNames(t *testing.T) {
	ca := probetest.NewCA(t)
	names := make([]string, 0, 9000)
	for i := range 8998 {
		names = append(names, fmt.Sprintf("host%04d.hoster.net", i))
	}
	names = append(names, "mx1.example.com", strings.Repeat("x", 300)+".example.com")
	cert := ca.Issue(t, names, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf}
	for range 11 {
		chain = append(chain, ca.Cert)
	}
	info := inspectTLS(tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: chain}, ca.Pool, time.Now(), "mx1.example.com", "example.com")
	if len(info.Chain) != maxChain || info.MoreChain != 2 {
		t.Errorf("chain: %d recorded, %d more; want %d and 2", len(info.Chain), info.MoreChain, maxChain)
	}
	got := info.Chain[0]
	if len(got.DNSNames) != maxNames || got.MoreDNSNames != len(names)-maxNames {
		t.Errorf("names: %d kept, %d more; want %d and %d", len(got.DNSNames), got.MoreDNSNames, maxNames, len(names)-maxNames)
	}
	if got.DNSNames[0] != "mx1.example.com" || got.DNSNames[1] != "host0000.hoster.net" {
		t.Errorf("kept names start %v", got.DNSNames[:2])
	}
	if !info.Verify.OK || !info.Secure.OK {
		t.Errorf("verify %+v, secure %+v", info.Verify, info.Secure)
	}
	if c, known := info.CheckMatch("hostname", "mx1.example.com", "example.com", true); !known || !c.OK {
		t.Errorf("CheckMatch(hostname) on the record: %+v, known %v", c, known)
	}
	info = inspectTLS(tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: chain}, ca.Pool, time.Now(), "mx9.other.org", "other.org")
	if info.Verify.OK || len(info.Verify.Reason) > 300 || !strings.Contains(info.Verify.Reason, "and 8995 more]") {
		t.Errorf("verify reason (%d bytes): %.400s", len(info.Verify.Reason), info.Verify.Reason)
	}
}

func TestCapString(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{{"abc", 3, "abc"}, {"abcd", 3, "abc…"}, {"ééé", 3, "é…"}, {"ééé", 4, "éé…"}} {
		if got := capString(tc.s, tc.n); got != tc.want {
			t.Errorf("capString(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
