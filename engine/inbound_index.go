package engine

import (
	"cmp"
	"net/netip"
	"slices"
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
