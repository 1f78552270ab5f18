package store

import (
	"errors"
	"strings"
)

// Attr is one name=value attribute of a policy. Name is lower-case.
type Attr struct{ Name, Value string }

// Policy is a parsed Postfix TLS policy: a level and its attributes.
// Policies are immutable once parsed.
type Policy struct {
	Level Level
	Attrs []Attr
	// Text is the policy as written, runs of whitespace collapsed to one
	// space and attribute order kept: the data of the socketmap OK reply.
	Text string
}

// String returns p.Text.
func (p *Policy) String() string { return p.Text }

// Attr returns the value of the first attribute called name, if any.
func (p *Policy) Attr(name string) (string, bool) {
	for _, a := range p.Attrs {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// attribute names known to Postfix 3.7's smtp_tls_policy.c.
const (
	attrCiphers         = "ciphers"
	attrExclude         = "exclude"
	attrProtocols       = "protocols"
	attrMatch           = "match"
	attrConnectionReuse = "connection_reuse"
	attrTafile          = "tafile"
	attrServername      = "servername"
)

// attrAllowed reports whether postconf(5) smtp_tls_policy_maps (and
// smtp_tls_policy.c) allow attribute name at level l.
func attrAllowed(name string, l Level) bool {
	switch name {
	case attrCiphers, attrExclude, attrProtocols, attrConnectionReuse, attrServername:
		// Every level that uses TLS. (At "none" Postfix ignores attributes
		// with a warning; we reject them.)
		return l != LevelNone
	case attrMatch:
		return l == LevelFingerprint || l == LevelVerify || l == LevelSecure
	case attrTafile:
		// TLS_MUST_PKIX: only where CA-based trust is used.
		return l == LevelVerify || l == LevelSecure
	}
	return false
}

// levelsFor lists, for error messages, the levels at which name is allowed.
func levelsFor(name string) string {
	var ls []string
	for l := LevelNone; l <= LevelSecure; l++ {
		if attrAllowed(name, l) {
			ls = append(ls, l.String())
		}
	}
	return strings.Join(ls, ", ")
}

// isPolicySep reports whether c separates policy tokens: Postfix splits
// the policy on CHARS_COMMA_SP (comma, space, tab, CR, LF).
func isPolicySep(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',' || c == '\v' || c == '\f'
}

// ParsePolicy parses and validates a TLS policy string the way Postfix 3.7
// does (smtp_tls_policy.c tls_policy_lookup_one): a level, then
// name=value attributes separated by whitespace or commas. Levels and
// attribute names are case-insensitive, as in Postfix. Where Postfix only
// warns (attributes at level none) or defers mail at delivery time (a bad
// cipher grade or protocol list, fingerprint without fingerprints), this is
// an error here, so the table is rejected before any mail is affected.
func ParsePolicy(s string) (*Policy, error) {
	var toks []string
	for i := 0; i < len(s); {
		for i < len(s) && isPolicySep(s[i]) {
			i++
		}
		j := i
		for j < len(s) && !isPolicySep(s[j]) {
			j++
		}
		if j > i {
			toks = append(toks, s[i:j])
		}
		i = j
	}
	if len(toks) == 0 {
		return nil, errors.New("empty policy")
	}
	level, ok := ParseLevel(strings.ToLower(toks[0]))
	if !ok {
		if strings.Contains(toks[0], "=") {
			return nil, errorf("policy %q does not start with a level (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)", s)
		}
		return nil, errorf("unknown level %q (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)", toks[0])
	}
	p := &Policy{Level: level, Text: collapseSpace(s)}
	var seen attrSet
	for _, tok := range toks[1:] {
		if tok[0] == '{' || tok[len(tok)-1] == '}' {
			return nil, errorf("attribute %q: brace-quoted values are not supported (values contain no whitespace or commas; join lists with \":\")", tok)
		}
		name, val, ok := strings.Cut(tok, "=")
		if !ok {
			return nil, errorf("malformed attribute %q: want name=value (values contain no whitespace or commas; join lists with \":\")", tok)
		}
		if name == "" {
			return nil, errorf("malformed attribute %q: missing attribute name", tok)
		}
		name = strings.ToLower(name)
		switch name {
		case attrCiphers, attrExclude, attrProtocols, attrMatch, attrConnectionReuse, attrTafile, attrServername:
		default:
			return nil, errorf("unknown attribute %q (Postfix 3.7 knows ciphers, exclude, protocols, match, connection_reuse, tafile, servername)", name)
		}
		if !attrAllowed(name, level) {
			if level == LevelNone {
				return nil, errorf("attribute %q is not allowed at level none: TLS is disabled (Postfix ignores it)", name)
			}
			return nil, errorf("attribute %q is not allowed at level %s (only at %s)", name, level, levelsFor(name))
		}
		switch name {
		case attrCiphers, attrProtocols, attrServername, attrExclude:
			// smtp_tls_policy.c: "Only one instance per policy."
			if seen.has(name) {
				return nil, errorf("attribute %q is specified more than once", name)
			}
		}
		seen.add(name)
		if err := checkAttrValue(name, val, level); err != nil {
			return nil, err
		}
		p.Attrs = append(p.Attrs, Attr{Name: name, Value: val})
	}
	if level == LevelFingerprint && !seen.has(attrMatch) {
		return nil, errors.New("level fingerprint requires match= with the certificate or public-key fingerprint(s), e.g. match=AB:CD:…|12:34:…")
	}
	return p, nil
}

// attrSet is a set of the attribute names ParsePolicy knows.
type attrSet uint8

var attrBits = map[string]attrSet{attrCiphers: 1, attrExclude: 2, attrProtocols: 4, attrMatch: 8, attrConnectionReuse: 16, attrTafile: 32, attrServername: 64}

func (s attrSet) has(name string) bool { return s&attrBits[name] != 0 }
func (s *attrSet) add(name string)     { *s |= attrBits[name] }

// collapseSpace trims s and replaces every run of whitespace by one space.
// It returns s itself when there is nothing to change (no allocation).
func collapseSpace(s string) string {
	clean := len(s) > 0 && s[0] != ' ' && s[len(s)-1] != ' '
	for i := 0; clean && i < len(s); i++ {
		switch s[i] {
		case '\t', '\r', '\n', '\v', '\f':
			clean = false
		case ' ':
			clean = s[i+1] != ' ' // s does not end in a space
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteByte(c)
	}
	return b.String()
}

var cipherGrades = []string{"export", "low", "medium", "high", "null"}

// checkAttrValue validates the value of one attribute as Postfix would
// when it uses it.
func checkAttrValue(name, val string, level Level) error {
	switch name {
	case attrCiphers:
		// tls_cipher_grade_table: the grade names, case-insensitive.
		for _, g := range cipherGrades {
			if strings.EqualFold(val, g) {
				return nil
			}
		}
		if val == "" {
			return errors.New(`attribute "ciphers" has an empty value (want export, low, medium, high or null)`)
		}
		return errorf("ciphers=%s: unknown cipher grade (want export, low, medium, high or null)", val)
	case attrProtocols:
		return checkProtocols(val)
	case attrServername:
		if val == "" {
			return errors.New(`attribute "servername" has an empty value (want a host name, "hostname" or "nexthop")`)
		}
		if err := checkHostname(val); err != nil {
			return errorf("servername=%s: invalid host name: %v", val, err)
		}
	case attrConnectionReuse:
		if !strings.EqualFold(val, "yes") && !strings.EqualFold(val, "no") {
			return errorf("connection_reuse=%s: want yes or no", val)
		}
	case attrTafile:
		if val == "" {
			return errors.New(`attribute "tafile" has an empty value (want a trust-anchor file name)`)
		}
	case attrMatch:
		if level == LevelFingerprint {
			return checkFingerprints(val)
		}
		return checkCertMatch(val)
	}
	return nil
}

// Raise returns a policy at least as strict as floor (see Level.Satisfies),
// or p itself when it already is. The result keeps only the attributes that
// are valid at the new level and still mean what they meant:
//
//   - dane becomes dane-only: with usable TLSA records dane already
//     authenticates the server; replacing it by encrypt or verify would
//     ignore the TLSA records (weaken or change authentication), while
//     dane-only keeps them and refuses delivery without them.
//   - none and may become the floor level; their ciphers, protocols and
//     exclude are dropped, since they were chosen for opportunistic TLS and
//     would override the stricter smtp_tls_mandatory_* settings.
//   - verify raised to secure drops match=: verify's match patterns are
//     meant for MX host names, secure's default (nexthop:dot-nexthop) is the
//     stronger check.
//   - otherwise the level is replaced and the attributes are kept.
//
// A floor of dane, dane-only or fingerprint is treated as secure.
func (p *Policy) Raise(floor Level) *Policy {
	switch floor {
	case LevelNone, LevelMay, LevelEncrypt, LevelVerify, LevelSecure:
	default:
		floor = LevelSecure
	}
	if p.Level.Satisfies(floor) {
		return p
	}
	to := floor
	if p.Level == LevelDane {
		to = LevelDaneOnly
	}
	opportunistic := p.Level == LevelNone || p.Level == LevelMay
	q := &Policy{Level: to}
	var b strings.Builder
	b.WriteString(to.String())
	for _, a := range p.Attrs {
		if !attrAllowed(a.Name, to) {
			continue
		}
		if opportunistic && (a.Name == attrCiphers || a.Name == attrProtocols || a.Name == attrExclude) {
			continue
		}
		if a.Name == attrMatch && p.Level == LevelVerify && to == LevelSecure {
			continue
		}
		q.Attrs = append(q.Attrs, a)
		b.WriteByte(' ')
		b.WriteString(a.Name)
		b.WriteByte('=')
		b.WriteString(a.Value)
	}
	q.Text = b.String()
	return q
}

// plainPolicy returns the policy consisting of level l alone.
func plainPolicy(l Level) *Policy { return &Policy{Level: l, Text: l.String()} }
