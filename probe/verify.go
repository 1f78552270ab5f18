package probe

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
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

// checkNames checks a trusted leaf against patterns; what describes the
// patterns for the reason ("mx1.example", "example or *.example").
func checkNames(trusted bool, trustErr string, leaf *x509.Certificate, pats []namePattern, what string) Check {
	if !trusted {
		return Check{Reason: "certificate not trusted: " + trustErr}
	}
	names := certNames(leaf)
	for _, n := range names {
		if matchServerName(n, pats) {
			return Check{OK: true}
		}
	}
	return Check{Reason: fmt.Sprintf("certificate names %v do not match %s", names, what)}
}

// inspectTLS records a completed handshake and runs Postfix's verify and
// secure checks: mxHost is the MX host name, nexthop the next-hop domain.
func inspectTLS(cs tls.ConnectionState, roots *x509.CertPool, now time.Time, mxHost, nexthop string) *TLSInfo {
	info := &TLSInfo{
		Version: tlsVersionName(cs.Version),
		Cipher:  tls.CipherSuiteName(cs.CipherSuite),
	}
	for _, c := range cs.PeerCertificates {
		info.Chain = append(info.Chain, certInfo(c))
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
	info.Verify = checkNames(info.Trusted, info.TrustError, leaf,
		[]namePattern{{name: mxHost}}, mxHost)
	info.Secure = checkNames(info.Trusted, info.TrustError, leaf,
		[]namePattern{{name: nexthop}, {name: nexthop, sub: true}}, nexthop+" or a subdomain of it")
	return info
}

func certInfo(c *x509.Certificate) CertInfo {
	sum := sha256.Sum256(c.Raw)
	ci := CertInfo{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		DNSNames:  c.DNSNames,
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    colonHex(sum[:]),
	}
	for _, ip := range c.IPAddresses {
		ci.IPAddresses = append(ci.IPAddresses, ip.String())
	}
	return ci
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
