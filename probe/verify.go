package probe

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// namePattern is one Postfix match= pattern, already resolved: a name that
// must match exactly (wildcards in the certificate allowed), or, with sub
// set, any proper subdomain of name (Postfix's ".domain" / dot-nexthop).
type namePattern struct {
	name string
	sub  bool
}

// matchServerName reports whether the certificate name certid matches one
// of pats, as Postfix's match_servername (src/tls/tls_client.c) does with
// its defaults (tls_wildcard_matches_multiple_labels = yes):
//   - a subdomain pattern matches a certid ending in "."+name (the certid
//     itself may be a wildcard such as "*.example.com");
//   - an exact pattern matches an equal certid (case-insensitive), or a
//     certid "*.parent" when the pattern has a '.' and ends in ".parent".
func matchServerName(certid string, pats []namePattern) bool {
	certid = strings.ToLower(strings.TrimSuffix(certid, "."))
	for _, p := range pats {
		name := strings.ToLower(p.name)
		if p.sub {
			if len(certid) > len(name)+1 && strings.HasSuffix(certid, "."+name) {
				return true
			}
			continue
		}
		if certid == name {
			return true
		}
		if strings.HasPrefix(certid, "*.") && len(certid) > 2 {
			dot := strings.IndexByte(name, '.')
			if dot >= 0 && strings.HasSuffix(name[dot:], certid[1:]) {
				return true
			}
		}
	}
	return false
}

// Limits on what is recorded of a presented chain, so that a hostile or
// broken server cannot make every result (and the cache file, once per
// address) carry megabytes: a certificate may list thousands of names.
const (
	// maxChain is how many certificates of a chain are recorded
	// (TLSInfo.MoreChain counts the rest).
	maxChain = 10
	// maxNames is how many DNS names, and how many IP addresses, are
	// recorded per certificate (CertInfo.MoreDNSNames, MoreIPAddresses).
	maxNames = 100
	// maxNameLen drops longer certificate names: no DNS name is longer, so
	// none of them could match a policy's name.
	maxNameLen = 253
	// maxDN caps the Subject and Issuer strings.
	maxDN = 1024
	// maxReasonNames is how many names a "do not match" reason lists.
	maxReasonNames = 5
)

// Postfix's default match= lists (postconf(5)): smtp_tls_verify_cert_match
// for the verify level and smtp_tls_secure_cert_match for secure.
const (
	DefaultVerifyMatch = "hostname"
	DefaultSecureMatch = "nexthop:dot-nexthop"
)

// resolveMatch turns a Postfix match= list of the verify and secure levels
// (colon-separated; several match attributes are joined with ':', as
// smtp_tls_policy.c appends them) into patterns, as match_servername does:
// "hostname" is the MX host, "nexthop" the next-hop domain, "dot-nexthop"
// any proper subdomain of it (all three case-insensitive), ".domain" any
// proper subdomain of domain, anything else a literal name.
func resolveMatch(match, mxHost, nexthop string) []namePattern {
	var pats []namePattern
	for _, tok := range strings.Split(match, ":") {
		switch {
		case tok == "":
		case strings.EqualFold(tok, "hostname"):
			pats = append(pats, namePattern{name: mxHost})
		case strings.EqualFold(tok, "nexthop"):
			pats = append(pats, namePattern{name: nexthop})
		case strings.EqualFold(tok, "dot-nexthop"):
			pats = append(pats, namePattern{name: nexthop, sub: true})
		case len(tok) > 1 && tok[0] == '.':
			pats = append(pats, namePattern{name: tok[1:], sub: true})
		default:
			pats = append(pats, namePattern{name: tok})
		}
	}
	return pats
}

// describePatterns says what patterns accept, for a reason:
// "mx1.example", "example or a subdomain of it".
func describePatterns(pats []namePattern) string {
	parts := make([]string, 0, len(pats))
	for i, p := range pats {
		switch {
		case !p.sub:
			parts = append(parts, p.name)
		case i > 0 && !pats[i-1].sub && strings.EqualFold(pats[i-1].name, p.name):
			parts = append(parts, "a subdomain of it")
		default:
			parts = append(parts, "a subdomain of "+p.name)
		}
	}
	if len(parts) == 0 {
		return "an empty match list"
	}
	return strings.Join(parts, " or ")
}

// certNames returns the names Postfix checks: the subjectAltName dNSNames
// when the certificate has any, else its CommonName.
func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return nil
}

// checkNames checks a leaf whose names are names (more: how many more it
// has that are not in names) against patterns; the chain must be trusted.
func checkNames(trusted bool, trustErr string, names []string, more int, pats []namePattern) Check {
	if !trusted {
		return Check{Reason: "certificate not trusted: " + trustErr}
	}
	for _, n := range names {
		if matchServerName(n, pats) {
			return Check{OK: true}
		}
	}
	return Check{Reason: fmt.Sprintf("certificate names %s do not match %s", listNames(names, more), describePatterns(pats))}
}

// listNames formats names for a reason, at most maxReasonNames of them:
// "[a b c]", "[a b c d e and 95 more]".
func listNames(names []string, more int) string {
	if len(names) > maxReasonNames {
		more += len(names) - maxReasonNames
		names = names[:maxReasonNames]
	}
	s := strings.Join(names, " ")
	if more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return "[" + strings.TrimPrefix(s, " ") + "]"
}

// inspectTLS records a completed handshake and runs Postfix's verify and
// secure checks: mxHost is the MX host name, nexthop the next-hop domain.
// The checks use the whole certificate; what is recorded of it is capped
// (see maxChain, maxNames).
func inspectTLS(cs tls.ConnectionState, roots *x509.CertPool, now time.Time, mxHost, nexthop string) *TLSInfo {
	info := &TLSInfo{
		Version: tlsVersionName(cs.Version),
		Cipher:  tls.CipherSuiteName(cs.CipherSuite),
	}
	// Names matching the default strategies are kept first, so that
	// CertInfo.MatchNames answers for hostname, nexthop and dot-nexthop
	// exactly even when a leaf's names were capped.
	prefer := defaultPatterns(mxHost, nexthop)
	for i, c := range cs.PeerCertificates {
		if i == maxChain {
			info.MoreChain = len(cs.PeerCertificates) - maxChain
			break
		}
		info.Chain = append(info.Chain, certInfo(c, prefer))
	}
	if len(cs.PeerCertificates) == 0 {
		info.TrustError = "no certificate presented"
		info.Verify = Check{Reason: info.TrustError}
		info.Secure = info.Verify
		return info
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots, // nil: system roots
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	info.Trusted = err == nil
	if err != nil {
		info.TrustError = err.Error()
	}
	names := certNames(leaf)
	info.Verify = checkNames(info.Trusted, info.TrustError, names, 0, resolveMatch(DefaultVerifyMatch, mxHost, nexthop))
	info.Secure = checkNames(info.Trusted, info.TrustError, names, 0, resolveMatch(DefaultSecureMatch, mxHost, nexthop))
	return info
}

// defaultPatterns returns the patterns of the default verify and secure
// match lists: the MX host, the next-hop and its subdomains.
func defaultPatterns(mxHost, nexthop string) []namePattern {
	return append(resolveMatch(DefaultVerifyMatch, mxHost, nexthop), resolveMatch(DefaultSecureMatch, mxHost, nexthop)...)
}

// certInfo records c, keeping at most maxNames DNS names: first those
// that match one of prefer, then the others in certificate order.
func certInfo(c *x509.Certificate, prefer []namePattern) CertInfo {
	sum := sha256.Sum256(c.Raw)
	pk := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	ci := CertInfo{
		Subject:      capString(c.Subject.String(), maxDN),
		Issuer:       capString(c.Issuer.String(), maxDN),
		CommonName:   capString(c.Subject.CommonName, maxNameLen),
		NotBefore:    c.NotBefore.UTC(),
		NotAfter:     c.NotAfter.UTC(),
		SHA256:       colonHex(sum[:]),
		PubkeySHA256: colonHex(pk[:]),
	}
	var rest []string
	for _, n := range c.DNSNames {
		switch {
		case len(n) > maxNameLen:
			ci.MoreDNSNames++
		case len(ci.DNSNames) < maxNames && matchServerName(n, prefer):
			ci.DNSNames = append(ci.DNSNames, n)
		case len(rest) < maxNames:
			rest = append(rest, n)
		default:
			ci.MoreDNSNames++
		}
	}
	if room := maxNames - len(ci.DNSNames); len(rest) > room {
		ci.MoreDNSNames += len(rest) - room
		rest = rest[:room]
	}
	ci.DNSNames = append(ci.DNSNames, rest...)
	for i, ip := range c.IPAddresses {
		if i == maxNames {
			ci.MoreIPAddresses = len(c.IPAddresses) - maxNames
			break
		}
		ci.IPAddresses = append(ci.IPAddresses, ip.String())
	}
	return ci
}

// capString returns s cut to at most n bytes ("…" marking the cut; a rune
// split by the cut is dropped).
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// names returns the names Postfix checks of a recorded certificate:
// the DNS names when it had any, else its CommonName.
func (c *CertInfo) names() []string {
	if len(c.DNSNames) > 0 || c.MoreDNSNames > 0 {
		return c.DNSNames
	}
	if c.CommonName != "" {
		return []string{c.CommonName}
	}
	return nil
}

// CheckMatch runs Postfix's verify/secure certificate check with the match=
// list match (see DefaultVerifyMatch, DefaultSecureMatch) on what was
// recorded of the handshake, for the MX host mxHost and the next-hop
// nexthop: the chain must be trusted (unless trust is false: a tafile=
// trust anchor, which the prober does not have, decides it) and a name of
// the leaf (its DNS names, else its CommonName) must match, wildcards as
// Postfix's match_servername allows them.
//
// known is false when the record cannot tell: the leaf has no names and
// comes from a version that did not record its CommonName (no public-key
// digest either), or the leaf had more names than
// were recorded (CertInfo.MoreDNSNames), none of those kept matches, and
// match asks for a name other than the MX host, the next-hop and its
// subdomains (names matching those are recorded first, so for the default
// lists the answer is exact).
func (t *TLSInfo) CheckMatch(match, mxHost, nexthop string, trust bool) (c Check, known bool) {
	if len(t.Chain) == 0 {
		return Check{Reason: "no certificate presented"}, true
	}
	if trust && !t.Trusted {
		return checkNames(false, t.TrustError, nil, 0, nil), true
	}
	leaf := &t.Chain[0]
	if leaf.names() == nil && leaf.PubkeySHA256 == "" {
		// Recorded before names and CommonName were kept whole (a
		// probe cache from an older version): nothing to judge by.
		return Check{}, false
	}
	pats := resolveMatch(match, mxHost, nexthop)
	c = checkNames(true, "", leaf.names(), leaf.MoreDNSNames, pats)
	if c.OK || leaf.MoreDNSNames == 0 {
		return c, true
	}
	prefer := defaultPatterns(mxHost, nexthop)
	for _, p := range pats {
		if !slices.ContainsFunc(prefer, func(q namePattern) bool { return q.sub == p.sub && strings.EqualFold(q.name, p.name) }) {
			return Check{}, false
		}
	}
	return c, true
}

// CheckFingerprint runs Postfix's fingerprint-level check on what was
// recorded: match is the policy's match= value ("|"-separated digests, hex
// in any case, colons optional; several match attributes joined with '|'),
// and the leaf certificate's SHA-256 digest or its public key's must be
// one of them (smtp_tls_fingerprint_digest = sha256, the default since
// Postfix 3.6; Postfix adds every value as both a certificate and a
// public-key digest).
//
// known is false when no value is as long as a SHA-256 digest (the site
// then uses another digest, md5, sha1 or sha512, which the prober does not
// compute), or when the record predates PubkeySHA256 and the certificate
// digest does not match.
func (t *TLSInfo) CheckFingerprint(match string) (c Check, known bool) {
	if len(t.Chain) == 0 {
		return Check{Reason: "no certificate presented"}, true
	}
	leaf := &t.Chain[0]
	cert, pkey := hexDigits(leaf.SHA256), hexDigits(leaf.PubkeySHA256)
	sha256Values := 0
	for _, fp := range strings.Split(match, "|") {
		fp = hexDigits(fp)
		if len(fp) != 2*sha256.Size {
			continue
		}
		sha256Values++
		if fp == cert || fp == pkey {
			return Check{OK: true}, true
		}
	}
	if sha256Values == 0 || pkey == "" {
		return Check{}, false
	}
	return Check{Reason: fmt.Sprintf("neither the certificate's SHA-256 fingerprint %s nor its public key's %s is in match=",
		leaf.SHA256, leaf.PubkeySHA256)}, true
}

// hexDigits returns fp without colons, upper-case.
func hexDigits(fp string) string {
	return strings.ToUpper(strings.ReplaceAll(fp, ":", ""))
}

func colonHex(b []byte) string {
	h := strings.ToUpper(hex.EncodeToString(b))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}
