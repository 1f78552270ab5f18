package store

import (
	"errors"
	"slices"
	"strconv"
	"strings"
)

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

var protocolNames = [...]string{"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
var versionNames = []string{"None", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}

// checkProtocols validates a protocols= value as tls_proto_mask_lims does:
// colon-separated tokens NAME, !NAME, >=VERSION or <=VERSION (Postfix ≥ 3.6),
// names case-insensitive, versions also as hex numbers.
func checkProtocols(val string) error {
	for _, tok := range strings.Split(val, ":") {
		if _, ok := parseProtocolToken(tok); !ok {
			return errorf("protocols=%s: unknown protocol %q (want colon-separated SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, each optionally with \"!\", or >=VERSION / <=VERSION, e.g. protocols=>=TLSv1.2)", val, tok)
		}
	}
	return nil
}

// protocolToken is one token of a protocols= value: a bound (">=" or "<="
// and a version number: 0 for None, 0x0300 for SSLv3, 0x0301 for TLSv1,
// …), or a protocol included or excluded ("!"), by index in
// protocolNames.
type protocolToken struct {
	op      byte // '>', '<', '!' (exclude) or 0 (include); 0 with name -1: empty token
	version uint64
	name    int
	// huge: a hex version beyond 31 bits, which the table accepts and
	// ProtocolRange does not interpret.
	huge bool
}

// parseProtocolToken reads one token as tls_proto_mask_lims does; an
// empty token is skipped (ok, name -1).
func parseProtocolToken(tok string) (protocolToken, bool) {
	switch {
	case tok == "":
		return protocolToken{name: -1}, true
	case strings.HasPrefix(tok, ">="), strings.HasPrefix(tok, "<="):
		t := protocolToken{op: tok[0], name: -1}
		v := tok[2:]
		if isHex(v) {
			n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"), 16, 31)
			t.version, t.huge = n, err != nil
			return t, true
		}
		i := slices.IndexFunc(versionNames, func(n string) bool { return strings.EqualFold(n, v) })
		if i < 0 {
			return t, false
		}
		if i > 0 { // versionNames: None, SSLv3 (0x0300), TLSv1 (0x0301), …
			t.version = uint64(0x02ff + i)
		}
		return t, true
	}
	t := protocolToken{}
	name, not := strings.CutPrefix(tok, "!")
	if not {
		t.op = '!'
	}
	t.name = slices.IndexFunc(protocolNames[:], func(n string) bool { return strings.EqualFold(n, name) })
	return t, t.name >= 0
}

// ProtocolRange returns the lowest and highest TLS versions the Postfix SMTP
// client offers under a policy's protocols= value, among TLSv1 to TLSv1.3
// (0 and 0 when it enables none of them). spec is as tls_proto_mask_lims
// (Postfix 3.6 and later) reads it: tokens separated by ':' (or commas and
// spaces in main.cf), each ">=VERSION" or "<=VERSION" (a name, "None" or a
// hex number), "!NAME" to exclude a protocol or "NAME" to include it; when
// any protocol is included, every protocol not included is excluded.
// Names are matched case-insensitively, as the table loader accepts them.
//
// OpenSSL then offers the lowest contiguous run of the versions left
// ("!TLSv1.1" leaves TLSv1 alone, since TLS 1.2 cannot be offered without
// TLS 1.1 when TLSv1 is on): hi is the top of that run. SSLv2 and SSLv3 are
// left out: OpenSSL 1.1 and later disable or lack them, so they count as a
// gap below TLSv1.
func ProtocolRange(spec string) (lo, hi uint16, err error) {
	var floor, ceiling uint64
	var include, exclude [len(protocolNames)]bool
	anyInclude := false
	for _, tok := range strings.FieldsFunc(spec, func(r rune) bool { return strings.ContainsRune(":, \t\r\n", r) }) {
		t, ok := parseProtocolToken(tok)
		switch {
		case !ok:
			return 0, 0, errorf("protocols=%s: unknown protocol %q", spec, tok)
		case t.huge:
			return 0, 0, errorf("protocols=%s: unknown TLS version %q", spec, tok[2:])
		case t.op == '>':
			floor = t.version
		case t.op == '<':
			ceiling = t.version
		case t.op == '!':
			exclude[t.name] = true
		default:
			anyInclude = true
			include[t.name] = true
		}
	}
	const tlsv1 = 2 // index of TLSv1 in protocolNames
	for i := tlsv1; i < len(protocolNames); i++ {
		v := uint16(0x0301 + i - tlsv1)
		on := !exclude[i] && (!anyInclude || include[i]) &&
			(floor == 0 || uint64(v) >= floor) && (ceiling == 0 || uint64(v) <= ceiling)
		switch {
		case on && lo == 0:
			lo, hi = v, v
		case on && hi == v-1:
			hi = v
		case lo != 0:
			return lo, hi, nil
		}
	}
	return lo, hi, nil
}

func isHex(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// checkCertMatch validates match= at verify and secure: colon-separated
// strategies (hostname, nexthop, dot-nexthop) or host names, a leading dot
// matching subdomains. Postfix would accept any string and then simply never
// match it, deferring the mail forever; we reject what cannot be a name.
func checkCertMatch(val string) error {
	n := 0
	for _, tok := range strings.Split(val, ":") {
		if tok == "" {
			continue
		}
		n++
		switch strings.ToLower(tok) {
		case "hostname", "nexthop", "dot-nexthop":
			continue
		}
		name := strings.TrimPrefix(tok, ".")
		if err := checkHostname(name); err != nil {
			return errorf("match=%s: %q is neither hostname, nexthop, dot-nexthop nor a domain name: %v", val, tok, err)
		}
	}
	if n == 0 {
		return errors.New(`attribute "match" has an empty value (want colon-separated strategies or names, e.g. match=nexthop:dot-nexthop)`)
	}
	return nil
}

// checkFingerprints validates match= at fingerprint: "|"-separated digests,
// each hex, optionally colon-separated per byte (tls_dane_add_fpt_digests),
// at most 64 bytes (EVP_MAX_MD_SIZE) and at least 16 (MD5, the shortest
// digest smtp_tls_fingerprint_digest can select).
func checkFingerprints(val string) error {
	n := 0
	for _, fp := range strings.Split(val, "|") {
		if fp == "" {
			continue
		}
		n++
		if _, err := decodeFingerprint(fp); err != nil {
			return errorf("match=%s: fingerprint %q: %v", val, fp, err)
		}
	}
	if n == 0 {
		return errors.New(`attribute "match" has an empty value (want "|"-separated fingerprints)`)
	}
	return nil
}

// decodeFingerprint decodes a hex digest written as "AB:CD:…" or "abcd…"
// and returns its length in bytes.
func decodeFingerprint(fp string) (int, error) {
	n := 0
	for i := 0; i < len(fp); {
		if i+1 >= len(fp) || !isHexDigit(fp[i]) || !isHexDigit(fp[i+1]) {
			return 0, errors.New("want hex digit pairs, optionally separated by \":\"")
		}
		n++
		i += 2
		if i < len(fp) && fp[i] == ':' {
			i++
			if i == len(fp) {
				return 0, errors.New("trailing \":\"")
			}
		}
	}
	if n < 16 || n > 64 {
		return 0, errorf("%d bytes; a digest has 16 (md5) to 64 (sha512) bytes", n)
	}
	return n, nil
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
