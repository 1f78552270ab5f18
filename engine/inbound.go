package engine

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// inboundIndex finds the inbound rules that match a request without
// scanning every rule: each rule is indexed under every sender, recipient
// and client pattern it names. A rule matches when the request's lookups
// found it in every dimension it names (from, to, client). With 10,000
// rules a request costs a handful of map lookups.
type inboundIndex struct {
	rules []compiledRule // by value: one cache miss less per matching rule
	dims  []uint8        // by rule: the dimensions it names (dimFrom|dimTo|dimClient)

	// Entries are rule<<dimBits | dimension, so that sorting a request's
	// entries brings each rule's dimensions together, in table order.
	fromAddr, fromDomain, fromParent map[string][]int
	fromNull                         []int
	toAddr, toDomain, toParent       map[string][]int
	clientName, clientParent         map[string][]int
	clientPrefix                     []prefixLevel // by prefix length, shortest first
}

// Dimensions of a rule, and of an index entry.
const (
	dimFrom = 1 << iota
	dimTo
	dimClient
	dimBits = 3
)

// prefixLevel holds the client entries of one prefix length.
type prefixLevel struct {
	bits  int
	rules map[netip.Prefix][]int
}

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

func newInboundIndex(rules []*store.InboundRule) *inboundIndex {
	ix := &inboundIndex{
		fromAddr: map[string][]int{}, fromDomain: map[string][]int{}, fromParent: map[string][]int{},
		toAddr: map[string][]int{}, toDomain: map[string][]int{}, toParent: map[string][]int{},
		clientName: map[string][]int{}, clientParent: map[string][]int{},
	}
	byBits := map[int]map[netip.Prefix][]int{}
	for i, r := range rules {
		ix.rules = append(ix.rules, *compileRule(r))
		var dims uint8
		for _, p := range r.From {
			dims |= dimFrom
			addPattern(p, i<<dimBits|dimFrom, ix.fromAddr, ix.fromDomain, ix.fromParent, &ix.fromNull)
		}
		for _, p := range r.To {
			dims |= dimTo
			// "<>" never names a recipient: no list for it.
			addPattern(p, i<<dimBits|dimTo, ix.toAddr, ix.toDomain, ix.toParent, nil)
		}
		e := i<<dimBits | dimClient
		for _, p := range r.Client {
			dims |= dimClient
			p = strings.ToLower(p)
			if pfx, ok := parsePrefix(p); ok {
				m := byBits[pfx.Bits()]
				if m == nil {
					m = map[netip.Prefix][]int{}
					byBits[pfx.Bits()] = m
				}
				m[pfx] = appendOnce(m[pfx], e)
			} else if strings.HasPrefix(p, ".") {
				ix.clientParent[p[1:]] = appendOnce(ix.clientParent[p[1:]], e)
			} else {
				ix.clientName[p] = appendOnce(ix.clientName[p], e)
			}
		}
		ix.dims = append(ix.dims, dims)
	}
	for bits, m := range byBits {
		ix.clientPrefix = append(ix.clientPrefix, prefixLevel{bits, m})
	}
	slices.SortFunc(ix.clientPrefix, func(a, b prefixLevel) int { return cmp.Compare(a.bits, b.bits) })
	return ix
}

func appendOnce(s []int, e int) []int {
	if n := len(s); n > 0 && s[n-1] == e {
		return s
	}
	return append(s, e)
}

// addPattern indexes entry e under an address pattern: "<>" (the null
// sender; ignored when null is nil), user@domain, .domain or domain.
func addPattern(p string, e int, addr, domain, parent map[string][]int, null *[]int) {
	p = strings.ToLower(p)
	switch {
	case p == "<>":
		if null != nil {
			*null = appendOnce(*null, e)
		}
	case strings.Contains(p, "@"):
		addr[p] = appendOnce(addr[p], e)
	case strings.HasPrefix(p, "."):
		parent[p[1:]] = appendOnce(parent[p[1:]], e)
	default:
		domain[p] = appendOnce(domain[p], e)
	}
}

// parsePrefix parses an IP address (as a host prefix) or a CIDR.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// inboundRequest is what rule evaluation reads from a policy request: the
// attributes as sent, and the forms rules match against, normalised once
// by fromRequest.
type inboundRequest struct {
	Sender, Recipient         string
	ClientAddress, ClientName string
	Protocol                  string // encryption_protocol: "" without TLS
	CertFP, PubkeyFP          string

	sender, recipient address
	client            netip.Addr // invalid when client_address is not an address
	name              string     // verified client name, lower-case; "" if none
}

// address is a sender or recipient address as rules match it.
type address struct {
	addr   string // lower-case, one trailing dot removed
	base   string // addr without its +extension; "" when it has none
	domain string // after the last "@"; "" without one
}

// parseAddress normalises a: lower-case (patterns are lower-case), one
// trailing dot removed, and the address without its +extension: with
// Postfix's usual recipient_delimiter, legal+x@ourcorp.example is the
// mailbox legal@ourcorp.example, so a rule naming the latter covers the
// former (store.resolveTransport does the same for the transport maps).
func parseAddress(a string) address {
	addr := strings.ToLower(strings.TrimSuffix(a, "."))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return address{addr: addr}
	}
	ad := address{addr: addr, domain: addr[at+1:]}
	if j := strings.IndexByte(addr[:at], '+'); j > 0 {
		ad.base = addr[:j] + addr[at:]
	}
	return ad
}

// collect appends the entries of the patterns that cover address a: the
// null sender's when a is empty; else the address's, the address without
// its +extension's, its domain's and every parent domain's.
func collect(dst []int, a *address, byAddr, byDomain, byParent map[string][]int, null []int) []int {
	if a.addr == "" {
		return append(dst, null...)
	}
	dst = append(dst, byAddr[a.addr]...)
	if a.base != "" {
		dst = append(dst, byAddr[a.base]...)
	}
	dst = append(dst, byDomain[a.domain]...)
	for d := a.domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		dst = append(dst, byParent[d]...)
	}
	return dst
}

// lookup appends to dst the index entries of every pattern that covers
// req, sorted: each rule's entries together, rules in table order.
func (ix *inboundIndex) lookup(dst []int, req *inboundRequest) []int {
	c := collect(dst, &req.sender, ix.fromAddr, ix.fromDomain, ix.fromParent, ix.fromNull)
	if req.Recipient != "" {
		c = collect(c, &req.recipient, ix.toAddr, ix.toDomain, ix.toParent, nil)
	}
	if a := req.client; a.IsValid() {
		for _, lv := range ix.clientPrefix {
			if lv.bits > a.BitLen() {
				break
			}
			if p, err := a.Prefix(lv.bits); err == nil {
				c = append(c, lv.rules[p]...)
			}
		}
	}
	if name := req.name; name != "" {
		c = append(c, ix.clientName[name]...)
		for d := name; ; {
			i := strings.IndexByte(d, '.')
			if i < 0 {
				break
			}
			d = d[i+1:]
			c = append(c, ix.clientParent[d]...)
		}
	}
	slices.Sort(c)
	return c
}

// matching appends to dst, in table order, the rules that match req: those
// found in every dimension they name. A rule's patterns are all in the
// index, so this is exact, and the rules themselves are not read (with
// 10,000 rules, reading one is a cache miss or several).
func (ix *inboundIndex) matching(dst []int, req *inboundRequest) []int {
	var buf [16]int // a request's entries; rarely more
	entries := ix.lookup(buf[:0], req)
	for k := 0; k < len(entries); {
		rule, found := entries[k]>>dimBits, 0
		for ; k < len(entries) && entries[k]>>dimBits == rule; k++ {
			found |= entries[k] & (1<<dimBits - 1)
		}
		if dims := int(ix.dims[rule]); found&dims == dims {
			dst = append(dst, rule)
		}
	}
	return dst
}

// verifiedName returns the lower-cased verified client name; Postfix sends
// "unknown" when the name did not verify (forward-confirmed reverse DNS).
func verifiedName(n string) string {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	if n == "unknown" {
		return ""
	}
	return n
}

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

// sanitizeMax is the longest text sanitize keeps.
const sanitizeMax = 128

// sanitize keeps text taken from a request safe to put in an SMTP reply
// and a log line: printable ASCII only, bounded length.
func sanitize(s string) string {
	if clean(s) {
		return s
	}
	return string(appendSanitized(make([]byte, 0, min(len(s), sanitizeMax)), s))
}

// clean reports whether sanitize would return s unchanged.
func clean(s string) bool {
	if len(s) > sanitizeMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// appendSanitized appends sanitize(s) to dst.
func appendSanitized(dst []byte, s string) []byte {
	for i := 0; i < len(s) && i < sanitizeMax; i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			c = '?'
		}
		dst = append(dst, c)
	}
	return dst
}
