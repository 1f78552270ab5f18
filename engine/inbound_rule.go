package engine

import (
	"strings"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// compiledRule is an inbound rule with the text that names it in replies,
// events and logs computed once, when the table is loaded, rather than
// for every request.
type compiledRule struct {
	*store.InboundRule
	fingerprints map[string]bool // normalised: upper-case hex without colons

	// The fields of InboundRule that deciding reads, copied here so that
	// a request matching a rule reads one struct, not two and the
	// Require string's bytes: with 10,000 rules each is a cache miss
	// (unmet had been 3 % of the daemon's CPU in the bench's policy step).
	require            requirement
	testing, hasHeader bool
	reject             bool // Action is "reject"

	name          string // the rule name, sanitized for replies
	source        string // Source.String()
	wouldAction   string // "would defer" / "would reject", for testing events
	prependPrefix string // "PREPEND <header>: would <verb> (rule <name>): ", testing rules with a header
}

func compileRule(r *store.InboundRule) *compiledRule {
	cr := &compiledRule{
		InboundRule:  r,
		fingerprints: map[string]bool{},
		name:         sanitize(r.Name),
		source:       r.Source.String(),
		wouldAction:  "would " + r.Action,
		require:      requirementOf(r.Require),
		testing:      r.Testing,
		hasHeader:    r.Header != "",
		reject:       r.Action == "reject",
	}
	for _, fp := range r.Fingerprints {
		cr.fingerprints[normFingerprint(fp)] = true
	}
	if r.Testing && r.Header != "" {
		verb := "defer"
		if r.Action == "reject" {
			verb = "reject"
		}
		cr.prependPrefix = "PREPEND " + r.Header + ": would " + verb + " (rule " + cr.name + "): "
	}
	return cr
}

// requirement is an inbound rule's Require as a number.
type requirement uint8

const (
	reqUnknown requirement = iota
	reqTLS
	reqTLS12
	reqTLS13
	reqCert
	reqFingerprint
)

func requirementOf(s string) requirement {
	switch s {
	case "tls":
		return reqTLS
	case "tls1.2":
		return reqTLS12
	case "tls1.3":
		return reqTLS13
	case "cert":
		return reqCert
	case "fingerprint":
		return reqFingerprint
	}
	return reqUnknown
}

func normFingerprint(s string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
}

// registered reports whether the fingerprint fp, as Postfix sends it, is
// one of the rule's. It normalises fp as normFingerprint does, into a
// buffer on the stack: normFingerprint's two allocations for each of the
// two fingerprints of a request were half of this check's time.
func (r *compiledRule) registered(fp string) bool {
	fp = strings.TrimSpace(fp)
	var stack [160]byte // SHA-512 hex with colons is 191 bytes, without 128
	b := stack[:0]
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		switch {
		case c == ':':
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c >= 0x80:
			// Not hex: let normFingerprint handle Unicode case.
			return r.fingerprints[normFingerprint(fp)]
		}
		b = append(b, c)
	}
	return r.fingerprints[string(b)]
}
