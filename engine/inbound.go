package engine

import (
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
	clientPrefix                     map[int]map[netip.Prefix][]int // by prefix length
}

type compiledRule struct {
	*store.InboundRule
	fingerprints map[string]bool // normalised: upper-case hex without colons
}

func newInboundIndex(rules []*store.InboundRule) *inboundIndex {
	ix := &inboundIndex{
		fromAddr: map[string][]int{}, fromDomain: map[string][]int{}, fromParent: map[string][]int{},
		toAddr: map[string][]int{}, toDomain: map[string][]int{}, toParent: map[string][]int{},
		clientName: map[string][]int{}, clientParent: map[string][]int{},
		clientPrefix: map[int]map[netip.Prefix][]int{},
	}
	for i, r := range rules {
		cr := &compiledRule{InboundRule: r, fingerprints: map[string]bool{}}
		for _, fp := range r.Fingerprints {
			cr.fingerprints[normFingerprint(fp)] = true
		}
		ix.rules = append(ix.rules, cr)
		for _, p := range r.From {
			addPattern(p, i, ix.fromAddr, ix.fromDomain, ix.fromParent, &ix.fromNull)
		}
		for _, p := range r.To {
			addPattern(p, i, ix.toAddr, ix.toDomain, ix.toParent, &ix.toNull)
		}
		for _, p := range r.Client {
			p = strings.ToLower(p)
			if pfx, ok := parsePrefix(p); ok {
				m := ix.clientPrefix[pfx.Bits()]
				if m == nil {
					m = map[netip.Prefix][]int{}
					ix.clientPrefix[pfx.Bits()] = m
				}
				m[pfx] = appendOnce(m[pfx], i)
			} else if strings.HasPrefix(p, ".") {
				ix.clientParent[p[1:]] = appendOnce(ix.clientParent[p[1:]], i)
			} else {
				ix.clientName[p] = appendOnce(ix.clientName[p], i)
			}
		}
	}
	return ix
}

func appendOnce(s []int, i int) []int {
	if n := len(s); n > 0 && s[n-1] == i {
		return s
	}
	return append(s, i)
}

func addPattern(p string, i int, addr, domain, parent map[string][]int, null *[]int) {
	p = strings.ToLower(p)
	switch {
	case p == "<>":
		*null = appendOnce(*null, i)
	case strings.Contains(p, "@"):
		addr[p] = appendOnce(addr[p], i)
	case strings.HasPrefix(p, "."):
		parent[p[1:]] = appendOnce(parent[p[1:]], i)
	default:
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

// inboundRequest is what rule evaluation reads from a policy request.
type inboundRequest struct {
	Sender, Recipient         string
	ClientAddress, ClientName string
	Protocol                  string // encryption_protocol: "" without TLS
	CertFP, PubkeyFP          string
}

// splitAddr lowercases an address and returns it with its domain.
func splitAddr(a string) (addr, domain string) {
	addr = strings.ToLower(strings.TrimSuffix(a, "."))
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		domain = addr[at+1:]
	}
	return addr, domain
}

// matchAddr collects the rules whose patterns (in the given maps) cover
// the address addr with domain dom.
func collect(dst []int, addr, dom string, byAddr, byDomain, byParent map[string][]int, null []int) []int {
	if addr == "" {
		return append(dst, null...)
	}
	dst = append(dst, byAddr[addr]...)
	dst = append(dst, byDomain[dom]...)
	for d := dom; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		dst = append(dst, byParent[d]...)
	}
	return dst
}

func (ix *inboundIndex) candidates(req *inboundRequest) []int {
	var c []int
	sAddr, sDom := splitAddr(req.Sender)
	c = collect(c, sAddr, sDom, ix.fromAddr, ix.fromDomain, ix.fromParent, ix.fromNull)
	if req.Recipient != "" {
		rAddr, rDom := splitAddr(req.Recipient)
		c = collect(c, rAddr, rDom, ix.toAddr, ix.toDomain, ix.toParent, nil)
	}
	if a, err := netip.ParseAddr(req.ClientAddress); err == nil {
		a = a.Unmap()
		for bits, m := range ix.clientPrefix {
			if bits > a.BitLen() {
				continue
			}
			if p, err := a.Prefix(bits); err == nil {
				c = append(c, m[p]...)
			}
		}
	}
	if name := verifiedName(req.ClientName); name != "" {
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
	if len(r.From) > 0 && !addrMatches(r.From, req.Sender) {
		return false
	}
	if len(r.To) > 0 && (req.Recipient == "" || !addrMatches(r.To, req.Recipient)) {
		return false
	}
	if len(r.Client) > 0 && !clientMatches(r.Client, req.ClientAddress, req.ClientName) {
		return false
	}
	return true
}

func addrMatches(patterns []string, address string) bool {
	addr, dom := splitAddr(address)
	for _, p := range patterns {
		p = strings.ToLower(p)
		switch {
		case p == "<>":
			if addr == "" {
				return true
			}
		case addr == "":
			// The null sender matches only rules that name "<>".
		case strings.Contains(p, "@"):
			if p == addr {
				return true
			}
		case strings.HasPrefix(p, "."):
			if strings.HasSuffix(dom, p) {
				return true
			}
		default:
			if p == dom {
				return true
			}
		}
	}
	return false
}

func clientMatches(patterns []string, address, name string) bool {
	a, aerr := netip.ParseAddr(address)
	if aerr == nil {
		a = a.Unmap()
	}
	name = verifiedName(name)
	for _, p := range patterns {
		p = strings.ToLower(p)
		if pfx, ok := parsePrefix(p); ok {
			if aerr == nil && pfx.Contains(a) {
				return true
			}
			continue
		}
		if name == "" {
			continue
		}
		if strings.HasPrefix(p, ".") {
			if strings.HasSuffix(name, p) {
				return true
			}
		} else if p == name {
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

// unmet returns how req fails the rule's requirement, or nil if it meets it.
func (r *compiledRule) unmet(req *inboundRequest) *shortfall {
	v := tlsVersion(req.Protocol)
	got := "the connection was not encrypted"
	if req.Protocol != "" {
		got = "the connection used " + sanitize(req.Protocol)
	}
	switch r.Require {
	case "tls":
		if req.Protocol == "" {
			return &shortfall{"TLS", got, "enable STARTTLS"}
		}
	case "tls1.2":
		if v < 12 {
			return &shortfall{"TLS 1.2 or newer", got, "enable STARTTLS with TLS 1.2 or newer"}
		}
	case "tls1.3":
		if v < 13 {
			return &shortfall{"TLS 1.3", got, "enable STARTTLS with TLS 1.3"}
		}
	case "cert":
		if req.Protocol == "" {
			return &shortfall{"TLS with a client certificate", got, "enable STARTTLS and configure a TLS client certificate"}
		}
		if req.CertFP == "" {
			return &shortfall{"a TLS client certificate", "no client certificate was presented", "configure a TLS client certificate"}
		}
	case "fingerprint":
		if req.Protocol == "" {
			return &shortfall{"TLS with a registered client certificate", got, "enable STARTTLS and present the client certificate registered with us"}
		}
		if req.CertFP == "" && req.PubkeyFP == "" {
			return &shortfall{"a registered TLS client certificate", "no client certificate was presented", "present the client certificate registered with us"}
		}
		if !r.fingerprints[normFingerprint(req.CertFP)] && !r.fingerprints[normFingerprint(req.PubkeyFP)] {
			return &shortfall{"a registered TLS client certificate", "the client certificate presented is not the one on record", "present the client certificate registered with us, or register the new one"}
		}
	default:
		// Unknown requirement: the table validator refuses these. Treat it
		// as unmet rather than silently passing the mail (fail closed).
		return &shortfall{fmt.Sprintf("requirement %q", r.Require), "it cannot be checked", "contact us"}
	}
	return nil
}

// sanitize keeps text taken from a request safe to put in an SMTP reply
// and a log line: printable ASCII only, bounded length.
func sanitize(s string) string {
	const max = 128
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
