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

// inboundIndex finds the inbound rules that can match a request without
// scanning every rule: each rule is indexed under every sender, recipient
// and client pattern it names; candidates are then checked completely.
// With 10,000 rules a request costs a handful of map lookups.
type inboundIndex struct {
	rules []*compiledRule

	fromAddr, fromDomain, fromParent map[string][]int
	fromNull                         []int
	toAddr, toDomain, toParent       map[string][]int
	toNull                           []int
	clientName, clientParent         map[string][]int
	clientPrefix                     []prefixLevel // by prefix length, shortest first
}

// prefixLevel holds the client rules of one prefix length.
type prefixLevel struct {
	bits  int
	rules map[netip.Prefix][]int
}

// compiledRule is an inbound rule with its patterns parsed and the text
// that names it in replies, events and logs computed once, when the table
// is loaded, rather than for every request.
type compiledRule struct {
	*store.InboundRule
	from, to       addrPatterns
	clientPrefixes []netip.Prefix
	clientNames    []string        // exact verified client names
	clientSuffixes []string        // ".suffix", leading dot kept
	fingerprints   map[string]bool // normalised: upper-case hex without colons

	name          string // the rule name, sanitized for replies
	source        string // Source.String()
	wouldAction   string // "would defer" / "would reject", for testing events
	prependPrefix string // "PREPEND <header>: would <verb> (rule <name>): ", testing rules with a header
}

// addrPatterns is one rule's from or to list, by kind.
type addrPatterns struct {
	null    bool     // "<>": the null sender
	addrs   []string // "user@domain"
	domains []string // "domain"
	parents []string // ".domain", leading dot kept
}

func compileAddrPatterns(ps []string) addrPatterns {
	var a addrPatterns
	for _, p := range ps {
		p = strings.ToLower(p)
		switch {
		case p == "<>":
			a.null = true
		case strings.Contains(p, "@"):
			a.addrs = append(a.addrs, p)
		case strings.HasPrefix(p, "."):
			a.parents = append(a.parents, p)
		default:
			a.domains = append(a.domains, p)
		}
	}
	return a
}

func compileRule(r *store.InboundRule) *compiledRule {
	cr := &compiledRule{
		InboundRule:  r,
		from:         compileAddrPatterns(r.From),
		to:           compileAddrPatterns(r.To),
		fingerprints: map[string]bool{},
		name:         sanitize(r.Name),
		source:       r.Source.String(),
		wouldAction:  "would " + r.Action,
	}
	for _, p := range r.Client {
		p = strings.ToLower(p)
		if pfx, ok := parsePrefix(p); ok {
			cr.clientPrefixes = append(cr.clientPrefixes, pfx)
		} else if strings.HasPrefix(p, ".") {
			cr.clientSuffixes = append(cr.clientSuffixes, p)
		} else {
			cr.clientNames = append(cr.clientNames, p)
		}
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

func newInboundIndex(rules []*store.InboundRule) *inboundIndex {
	ix := &inboundIndex{
		fromAddr: map[string][]int{}, fromDomain: map[string][]int{}, fromParent: map[string][]int{},
		toAddr: map[string][]int{}, toDomain: map[string][]int{}, toParent: map[string][]int{},
		clientName: map[string][]int{}, clientParent: map[string][]int{},
	}
	byBits := map[int]map[netip.Prefix][]int{}
	for i, r := range rules {
		cr := compileRule(r)
		ix.rules = append(ix.rules, cr)
		indexAddrPatterns(&cr.from, i, ix.fromAddr, ix.fromDomain, ix.fromParent, &ix.fromNull)
		indexAddrPatterns(&cr.to, i, ix.toAddr, ix.toDomain, ix.toParent, &ix.toNull)
		for _, pfx := range cr.clientPrefixes {
			m := byBits[pfx.Bits()]
			if m == nil {
				m = map[netip.Prefix][]int{}
				byBits[pfx.Bits()] = m
			}
			m[pfx] = appendOnce(m[pfx], i)
		}
		for _, s := range cr.clientSuffixes {
			ix.clientParent[s[1:]] = appendOnce(ix.clientParent[s[1:]], i)
		}
		for _, n := range cr.clientNames {
			ix.clientName[n] = appendOnce(ix.clientName[n], i)
		}
	}
	for bits, m := range byBits {
		ix.clientPrefix = append(ix.clientPrefix, prefixLevel{bits, m})
	}
	slices.SortFunc(ix.clientPrefix, func(a, b prefixLevel) int { return cmp.Compare(a.bits, b.bits) })
	return ix
}

func appendOnce(s []int, i int) []int {
	if n := len(s); n > 0 && s[n-1] == i {
		return s
	}
	return append(s, i)
}

func indexAddrPatterns(a *addrPatterns, i int, addr, domain, parent map[string][]int, null *[]int) {
	if a.null {
		*null = appendOnce(*null, i)
	}
	for _, p := range a.addrs {
		addr[p] = appendOnce(addr[p], i)
	}
	for _, p := range a.parents {
		parent[p[1:]] = appendOnce(parent[p[1:]], i)
	}
	for _, p := range a.domains {
		domain[p] = appendOnce(domain[p], i)
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

// splitAddr lowercases an address and returns it with its domain.
func splitAddr(a string) (addr, domain string) {
	ad := parseAddress(a)
	return ad.addr, ad.domain
}

// collect appends the rules whose patterns (in the given maps) can cover
// address a.
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

// candidates appends to dst, in table order and once each, the rules that
// may match req.
func (ix *inboundIndex) candidates(dst []int, req *inboundRequest) []int {
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
	return slices.Compact(c)
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

// matches reports whether every dimension the rule names covers req.
func (r *compiledRule) matches(req *inboundRequest) bool {
	if len(r.From) > 0 && !r.from.match(&req.sender) {
		return false
	}
	if len(r.To) > 0 && (req.Recipient == "" || !r.to.match(&req.recipient)) {
		return false
	}
	if len(r.Client) > 0 && !r.clientMatches(req) {
		return false
	}
	return true
}

// match reports whether a pattern covers a: the null sender only "<>"; an
// address pattern the address, or the address without its +extension; a
// domain the address's domain; a .domain every domain below it.
func (p *addrPatterns) match(a *address) bool {
	if a.addr == "" {
		return p.null
	}
	for _, x := range p.addrs {
		if x == a.addr || x == a.base {
			return true
		}
	}
	for _, x := range p.domains {
		if x == a.domain {
			return true
		}
	}
	for _, x := range p.parents {
		if strings.HasSuffix(a.domain, x) {
			return true
		}
	}
	return false
}

func (r *compiledRule) clientMatches(req *inboundRequest) bool {
	if req.client.IsValid() {
		for _, p := range r.clientPrefixes {
			if p.Contains(req.client) {
				return true
			}
		}
	}
	if req.name == "" {
		return false
	}
	for _, n := range r.clientNames {
		if n == req.name {
			return true
		}
	}
	for _, s := range r.clientSuffixes {
		if strings.HasSuffix(req.name, s) {
			return true
		}
	}
	return false
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

// shortfall says how a request fails a rule's requirement: what the rule
// needs, what the connection had, and what the sender's postmaster should do.
type shortfall struct{ need, got, advice string }

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
	switch r.Require {
	case "tls":
		if req.Protocol == "" {
			return shortfall{"TLS", notEncrypted, "enable STARTTLS"}, true
		}
	case "tls1.2":
		if tlsVersion(req.Protocol) < 12 {
			return shortfall{"TLS 1.2 or newer", got(req.Protocol), "enable STARTTLS with TLS 1.2 or newer"}, true
		}
	case "tls1.3":
		if tlsVersion(req.Protocol) < 13 {
			return shortfall{"TLS 1.3", got(req.Protocol), "enable STARTTLS with TLS 1.3"}, true
		}
	case "cert":
		if req.Protocol == "" {
			return shortfall{"TLS with a client certificate", notEncrypted, "enable STARTTLS and configure a TLS client certificate"}, true
		}
		if req.CertFP == "" {
			return shortfall{"a TLS client certificate", "no client certificate was presented", "configure a TLS client certificate"}, true
		}
	case "fingerprint":
		if req.Protocol == "" {
			return shortfall{"TLS with a registered client certificate", notEncrypted, "enable STARTTLS and present the client certificate registered with us"}, true
		}
		if req.CertFP == "" && req.PubkeyFP == "" {
			return shortfall{"a registered TLS client certificate", "no client certificate was presented", "present the client certificate registered with us"}, true
		}
		if !r.fingerprints[normFingerprint(req.CertFP)] && !r.fingerprints[normFingerprint(req.PubkeyFP)] {
			return shortfall{"a registered TLS client certificate", "the client certificate presented is not the one on record", "present the client certificate registered with us, or register the new one"}, true
		}
	default:
		// Unknown requirement: the table validator refuses these. Treat it
		// as unmet rather than silently passing the mail (fail closed).
		return shortfall{fmt.Sprintf("requirement %q", r.Require), "it cannot be checked", "contact us"}, true
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
