package store

// Level is a Postfix TLS security level (postconf(5) smtp_tls_security_level).
// The zero Level is invalid, so that a forgotten field never means "none".
//
// The constants are in the order of tls_level_table; that is not the order
// of strength (dane may fall back to cleartext). Use Satisfies to compare.
type Level int

// Postfix 3.7 TLS security levels.
const (
	LevelNone        Level = iota + 1 // no TLS
	LevelMay                          // opportunistic TLS
	LevelEncrypt                      // mandatory TLS, unauthenticated
	LevelDane                         // opportunistic DANE: may without usable TLSA, authenticated with
	LevelDaneOnly                     // mandatory DANE: no usable TLSA, no delivery
	LevelFingerprint                  // mandatory TLS, certificate or key fingerprint pinned
	LevelVerify                       // mandatory TLS, certificate verified against the MX name
	LevelSecure                       // mandatory TLS, certificate verified against the next-hop name
)

var levelNames = [...]string{
	LevelNone:        "none",
	LevelMay:         "may",
	LevelEncrypt:     "encrypt",
	LevelDane:        "dane",
	LevelDaneOnly:    "dane-only",
	LevelFingerprint: "fingerprint",
	LevelVerify:      "verify",
	LevelSecure:      "secure",
}

// String returns the Postfix name of the level ("dane-only"), or "invalid".
func (l Level) String() string {
	if l >= LevelNone && l <= LevelSecure {
		return levelNames[l]
	}
	return "invalid"
}

// ParseLevel returns the level named s. Names are the lower-case Postfix
// names (Postfix itself also accepts other cases in a policy string;
// ParsePolicy does too).
func ParseLevel(s string) (Level, bool) {
	for l := LevelNone; l <= LevelSecure; l++ {
		if levelNames[l] == s {
			return l, true
		}
	}
	return 0, false
}

// Authenticated reports whether delivery at l requires an authenticated
// server: dane-only, fingerprint, verify and secure. (dane is not: without
// usable TLSA records it delivers like may.)
func (l Level) Authenticated() bool {
	switch l {
	case LevelDaneOnly, LevelFingerprint, LevelVerify, LevelSecure:
		return true
	}
	return false
}

// Satisfies reports whether a policy at level l meets floor, the minimum a
// per-address or per-sender rule demands:
//
//   - floor none: every level;
//   - floor may: every level but none;
//   - floor encrypt: encrypt and every authenticated level;
//   - floor verify: dane-only, fingerprint, verify, secure;
//   - floor secure: dane-only, fingerprint, secure (verify trusts the
//     unauthenticated MX lookup, secure does not).
//
// dane, dane-only and fingerprint are not floors any map asks for; as a
// floor they are treated like secure (the strictest), so that a mistake
// fails closed.
func (l Level) Satisfies(floor Level) bool {
	switch floor {
	case LevelNone:
		return l >= LevelNone && l <= LevelSecure
	case LevelMay:
		return l > LevelNone && l <= LevelSecure
	case LevelEncrypt:
		return l == LevelEncrypt || l.Authenticated()
	case LevelVerify:
		return l.Authenticated()
	default:
		return l == LevelDaneOnly || l == LevelFingerprint || l == LevelSecure
	}
}
