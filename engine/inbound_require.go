package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// tlsVersion parses Postfix's encryption_protocol ("TLSv1.3", "TLSv1")
// into a comparable number (13, 10); 0 without TLS, -1 if unknown.
func tlsVersion(p string) int {
	switch p {
	case "":
		return 0
	case "TLSv1":
		return 10
	}
	v, ok := strings.CutPrefix(p, "TLSv")
	if !ok {
		if p == "SSLv3" {
			return 3
		}
		return -1
	}
	maj, min, _ := strings.Cut(v, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if err1 != nil || err2 != nil || b > 9 {
		return -1
	}
	return a*10 + b
}

// shortfall says how a request fails a rule's requirement: what the rule
// needs, what the connection had, and what the sender's postmaster should do.
// reason is what logs and events say: "<need> is required; <got>".
type shortfall struct{ need, got, advice, reason string }

func newShortfall(need, got, advice string) shortfall {
	return shortfall{need, got, advice, need + " is required; " + got}
}

// The shortfalls of the requirements, built once rather than for every
// blocked request; those of the version requirements for every protocol
// Postfix sends (versionShortfall).
var (
	sfTLS              = newShortfall("TLS", notEncrypted, "enable STARTTLS")
	sfTLS12            = versionShortfalls("TLS 1.2 or newer", "enable STARTTLS with TLS 1.2 or newer")
	sfTLS13            = versionShortfalls("TLS 1.3", "enable STARTTLS with TLS 1.3")
	sfCertPlain        = newShortfall("TLS with a client certificate", notEncrypted, "enable STARTTLS and configure a TLS client certificate")
	sfCertNone         = newShortfall("a TLS client certificate", "no client certificate was presented", "configure a TLS client certificate")
	sfFingerprintPlain = newShortfall("TLS with a registered client certificate", notEncrypted, "enable STARTTLS and present the client certificate registered with us")
	sfFingerprintNone  = newShortfall("a registered TLS client certificate", "no client certificate was presented", "present the client certificate registered with us")
	sfFingerprintOther = newShortfall("a registered TLS client certificate", "the client certificate presented is not the one on record", "present the client certificate registered with us, or register the new one")
)

// versionShortfalls builds a version requirement's shortfalls by the
// protocol the connection used ("" for none).
func versionShortfalls(need, advice string) map[string]shortfall {
	m := map[string]shortfall{"": newShortfall(need, notEncrypted, advice)}
	for p, text := range usedText {
		m[p] = newShortfall(need, text, advice)
	}
	return m
}

// versionShortfall returns the shortfall of a version requirement for
// protocol, from byProtocol when it is one Postfix sends.
func versionShortfall(byProtocol map[string]shortfall, protocol string) shortfall {
	if sf, ok := byProtocol[protocol]; ok {
		return sf
	}
	base := byProtocol[""]
	return newShortfall(base.need, got(protocol), base.advice)
}

const notEncrypted = "the connection was not encrypted"

// usedText is what the connection had, for the protocols Postfix sends:
// built once instead of per blocked request.
var usedText = func() map[string]string {
	m := map[string]string{}
	for _, p := range []string{"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"} {
		m[p] = "the connection used " + p
	}
	return m
}()

// got describes the connection's encryption for a shortfall.
func got(protocol string) string {
	if protocol == "" {
		return notEncrypted
	}
	if t, ok := usedText[protocol]; ok {
		return t
	}
	return "the connection used " + sanitize(protocol)
}

// unmet returns how req fails the rule's requirement, and false if it
// meets it.
func (r *compiledRule) unmet(req *inboundRequest) (shortfall, bool) {
	switch r.require {
	case reqTLS:
		if req.Protocol == "" {
			return sfTLS, true
		}
	case reqTLS12:
		if tlsVersion(req.Protocol) < 12 {
			return versionShortfall(sfTLS12, req.Protocol), true
		}
	case reqTLS13:
		if tlsVersion(req.Protocol) < 13 {
			return versionShortfall(sfTLS13, req.Protocol), true
		}
	case reqCert:
		if req.Protocol == "" {
			return sfCertPlain, true
		}
		if req.CertFP == "" {
			return sfCertNone, true
		}
	case reqFingerprint:
		if req.Protocol == "" {
			return sfFingerprintPlain, true
		}
		if req.CertFP == "" && req.PubkeyFP == "" {
			return sfFingerprintNone, true
		}
		if !r.registered(req.CertFP) && !r.registered(req.PubkeyFP) {
			return sfFingerprintOther, true
		}
	default:
		// Unknown requirement: the table validator refuses these. Treat it
		// as unmet rather than silently passing the mail (fail closed).
		return newShortfall(fmt.Sprintf("requirement %q", r.Require), "it cannot be checked", "contact us"), true
	}
	return shortfall{}, false
}
