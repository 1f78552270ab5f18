package engine

import (
	"sort"
	"strings"
	"sync"
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
// (recognised by Postfix's "instance" attribute). The number of domains is
// bounded: sender domains come from the internet, so once the bound is
// reached new domains are counted under "(other)".
type Stats struct {
	mu      sync.Mutex
	max     int
	domains map[string]*DomainStats
	// recent instances, to count a message once across its recipients
	seen  map[string]struct{}
	order []string
	next  int
}

// NewStats returns counters for at most maxDomains sender domains.
func NewStats(maxDomains int) *Stats {
	return &Stats{max: maxDomains, domains: map[string]*DomainStats{}, seen: map[string]struct{}{}, order: make([]string, 4096)}
}

// Observe counts one policy request. instance is Postfix's per-message
// identifier ("" counts every request).
func (s *Stats) Observe(instance, sender, protocol string) {
	_, dom := splitAddr(sender)
	if sender == "" {
		dom = "<>"
	}
	dom = sanitize(dom)
	s.mu.Lock()
	defer s.mu.Unlock()
	if instance != "" {
		if _, ok := s.seen[instance]; ok {
			return
		}
		// Clone: request values share one backing string per request,
		// which must not be kept alive by this set.
		instance = strings.Clone(instance)
		if old := s.order[s.next]; old != "" {
			delete(s.seen, old)
		}
		s.order[s.next] = instance
		s.seen[instance] = struct{}{}
		s.next = (s.next + 1) % len(s.order)
	}
	d := s.domains[dom]
	if d == nil {
		if len(s.domains) >= s.max {
			dom = "(other)"
			d = s.domains[dom]
		}
		if d == nil {
			d = &DomainStats{Domain: dom, Versions: map[string]uint64{}}
			s.domains[dom] = d
		}
	}
	if protocol == "" {
		d.WithoutTLS++
		return
	}
	d.WithTLS++
	d.Versions[sanitize(protocol)]++
}

// Snapshot returns a copy of the counters sorted by domain.
func (s *Stats) Snapshot() []DomainStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DomainStats, 0, len(s.domains))
	for _, d := range s.domains {
		c := *d
		c.Versions = make(map[string]uint64, len(d.Versions))
		for k, v := range d.Versions {
			c.Versions[k] = v
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Domain, out[j].Domain) < 0 })
	return out
}
