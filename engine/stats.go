package engine

import (
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// DomainStats counts the mail seen from one sender domain.
type DomainStats struct {
	Domain     string            `json:"domain"`
	WithTLS    uint64            `json:"with_tls"`
	WithoutTLS uint64            `json:"without_tls"`
	Versions   map[string]uint64 `json:"versions,omitempty"` // by encryption_protocol
}

// Stats counts inbound mail per sender domain, with and without TLS and by
// TLS version. A message is counted once, at its first policy request
// (recognised by Postfix's "instance" attribute; see seen). The number of
// domains is bounded: sender domains come from the internet, so once the
// bound is reached new domains are counted under "(other)".
//
// Every policy request goes through Observe, from as many goroutines as
// Postfix has connections, so it is built to be cheap: domains are spread
// over statsShards locks, a known domain is counted without allocating,
// and recent instances are kept without a lock or a copy
// (BenchmarkObserve).
type Stats struct {
	max     int
	ndoms   atomic.Int64 // domains counted in all shards, "(other)" aside
	seed    maphash.Seed
	domains [statsShards]domainShard // by hash of the domain

	// seen holds hashes of recent instances, each in the slot its hash
	// selects, so that the later requests of a message (one per
	// recipient, moments apart on one connection) find it there. Another
	// message taking the slot in between makes one message count twice:
	// with 32,768 slots and a few hundred messages starting in between, a
	// chance of about one in a hundred. These are statistics; a set of
	// recent instances under a lock cost more than everything else here.
	seen [1 << 15]atomic.Uint64
}

// statsShards is the number of locks the domain counters are spread over:
// enough that 32 connections on a few cores rarely wait for one another.
const statsShards = 16

type domainShard struct {
	mu      sync.Mutex
	domains map[string]*domainCounts
	_       [48]byte // one cache line per shard: no false sharing between cores
}

// domainCounts are one domain's counters.
type domainCounts struct {
	domain              string
	withTLS, withoutTLS uint64
	versions            []versionCount // few: the TLS versions in use
}

type versionCount struct {
	version string
	n       uint64
}

// newStats returns counters for at most maxDomains sender domains.
func newStats(maxDomains int) *Stats {
	s := &Stats{max: maxDomains, seed: maphash.MakeSeed()}
	for i := range s.domains {
		s.domains[i].domains = map[string]*domainCounts{}
	}
	return s
}

// Observe counts one policy request. instance is Postfix's per-message
// identifier ("" counts every request).
func (s *Stats) Observe(instance, sender, protocol string) {
	a := parseAddress(sender)
	s.observe(instance, &a, protocol)
}

// observe is Observe with the sender already parsed. It keeps no string
// of the request: what it stores is copied.
func (s *Stats) observe(instance string, sender *address, protocol string) {
	if instance != "" && !s.firstSeen(instance) {
		return
	}
	dom := sender.domain
	if sender.addr == "" {
		dom = "<>"
	}
	// The key is the sanitized domain; built on the stack, so that looking
	// up a known domain allocates nothing.
	var kb [sanitizeMax]byte
	key := appendSanitized(kb[:0], dom)
	sh := &s.domains[maphash.Bytes(s.seed, key)%statsShards]
	sh.mu.Lock()
	d := sh.domains[string(key)]
	if d == nil {
		if s.ndoms.Add(1) <= int64(s.max) {
			d = &domainCounts{domain: string(key)}
			sh.domains[d.domain] = d
		} else {
			s.ndoms.Add(-1)
			sh.mu.Unlock()
			sh = &s.domains[maphash.String(s.seed, otherDomain)%statsShards]
			sh.mu.Lock()
			if d = sh.domains[otherDomain]; d == nil {
				d = &domainCounts{domain: otherDomain}
				sh.domains[otherDomain] = d
			}
		}
	}
	defer sh.mu.Unlock()
	if protocol == "" {
		d.withoutTLS++
		return
	}
	d.withTLS++
	v := appendSanitized(kb[:0], protocol)
	for i := range d.versions {
		if d.versions[i].version == string(v) {
			d.versions[i].n++
			return
		}
	}
	d.versions = append(d.versions, versionCount{string(v), 1})
}

// otherDomain counts the domains beyond the bound.
const otherDomain = "(other)"

// firstSeen reports whether instance is not in s.seen, and puts it there.
// The hash is 64 bits and seeded: that two instances share one is
// negligible (2⁻⁶³), and no sender can arrange it.
func (s *Stats) firstSeen(instance string) bool {
	h := maphash.String(s.seed, instance) | 1 // 0 marks an empty slot
	return s.seen[h%uint64(len(s.seen))].Swap(h) != h
}

// Snapshot returns a copy of the counters sorted by domain.
func (s *Stats) Snapshot() []DomainStats {
	var out []DomainStats
	for i := range s.domains {
		sh := &s.domains[i]
		sh.mu.Lock()
		for _, d := range sh.domains {
			c := DomainStats{Domain: d.domain, WithTLS: d.withTLS, WithoutTLS: d.withoutTLS,
				Versions: make(map[string]uint64, len(d.versions))}
			for _, v := range d.versions {
				c.Versions[v.version] = v.n
			}
			out = append(out, c)
		}
		sh.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Domain, out[j].Domain) < 0 })
	return out
}
