// Package sourcetest provides loopback fixtures for DANE and MTA-STS tests:
// a DNS server that plays a DNSSEC-validating resolver (it sets the AD bit
// on the names a test marks signed) and an HTTPS policy host serving
// .well-known/mta-sts.txt with a certificate from a test CA. Nothing
// touches a public address.
package sourcetest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// Resolver is an in-process DNS server on 127.0.0.1 (UDP and TCP) that
// answers like a validating recursive resolver: records of a name marked
// Signed come with AD set (so do NODATA and NXDOMAIN answers below a signed
// name); Fail makes a name and type answer SERVFAIL; Delay holds answers.
type Resolver struct {
	Addr string

	mu      sync.Mutex
	rrs     map[string][]dns.RR
	signed  map[string]bool // FQDN: this name and the names below it
	fail    map[string]int  // "name type" -> rcode
	delay   time.Duration
	counts  map[string]int // "name type" -> queries
	queries atomic.Int64
}

// NewResolver starts a resolver, stopped at the end of the test.
func NewResolver(t testing.TB) *Resolver {
	t.Helper()
	r := &Resolver{rrs: map[string][]dns.RR{}, signed: map[string]bool{}, fail: map[string]int{}, counts: map[string]int{}}
	r.Addr = probetest.StartDNS(t, r)
	return r
}

// Add publishes a record in zone-file syntax.
func (r *Resolver) Add(t testing.TB, rr string) {
	t.Helper()
	rec, err := dns.NewRR(rr)
	if err != nil {
		t.Fatalf("bad RR %q: %v", rr, err)
	}
	name := strings.ToLower(rec.Header().Name)
	r.mu.Lock()
	r.rrs[name] = append(r.rrs[name], rec)
	r.mu.Unlock()
}

// Remove deletes every record of name and type qtype.
func (r *Resolver) Remove(name string, qtype uint16) {
	name = dns.Fqdn(strings.ToLower(name))
	r.mu.Lock()
	defer r.mu.Unlock()
	var keep []dns.RR
	for _, rr := range r.rrs[name] {
		if rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	r.rrs[name] = keep
}

// Sign marks zone (and every name below it) as DNSSEC-signed: its
// answers carry the AD bit.
func (r *Resolver) Sign(zone string) {
	r.mu.Lock()
	r.signed[dns.Fqdn(strings.ToLower(zone))] = true
	r.mu.Unlock()
}

// Fail makes queries for name and qtype answer rcode (e.g. SERVFAIL).
func (r *Resolver) Fail(name string, qtype uint16, rcode int) {
	r.mu.Lock()
	r.fail[key(name, qtype)] = rcode
	r.mu.Unlock()
}

// Delay holds every answer for d.
func (r *Resolver) Delay(d time.Duration) {
	r.mu.Lock()
	r.delay = d
	r.mu.Unlock()
}

// Count returns how many queries asked for name and qtype.
func (r *Resolver) Count(name string, qtype uint16) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key(name, qtype)]
}

// Queries returns how many queries the resolver has received.
func (r *Resolver) Queries() int64 { return r.queries.Load() }

func key(name string, qtype uint16) string {
	return dns.Fqdn(strings.ToLower(name)) + " " + dns.TypeToString[qtype]
}

func (r *Resolver) isSigned(name string) bool {
	for n := name; ; {
		if r.signed[n] {
			return true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return false
		}
		n = n[i+1:]
	}
}

// ServeDNS implements dns.Handler.
func (r *Resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	r.queries.Add(1)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	r.mu.Lock()
	r.counts[key(name, q.Qtype)]++
	rc, failing := r.fail[key(name, q.Qtype)]
	rrs, exists := r.rrs[name]
	signed := r.isSigned(name)
	delay := r.delay
	r.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	switch {
	case failing:
		m.Rcode = rc
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.AuthenticatedData = signed
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		m.AuthenticatedData = signed
	}
	if o := req.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), o.Do())
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// PolicyHost is an HTTPS server on 127.0.0.1 with a certificate for the
// names it was given, signed by a test CA. Set Handler to change what it
// serves (default: Policy with content type text/plain).
type PolicyHost struct {
	Srv      *httptest.Server
	Port     int
	mu       sync.Mutex
	policy   string
	handler  http.HandlerFunc
	requests atomic.Int64
}

// NewPolicyHost starts an HTTPS server whose certificate names the given
// hosts (e.g. mta-sts.example.test), issued by ca.
func NewPolicyHost(t testing.TB, ca *probetest.CA, names ...string) *PolicyHost {
	t.Helper()
	h := &PolicyHost{}
	h.Srv = httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	cert := ca.Issue(t, names, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	h.Srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	h.Srv.StartTLS()
	t.Cleanup(h.Srv.Close)
	h.Port = h.Srv.Listener.Addr().(*net.TCPAddr).Port
	return h
}

// SetPolicy sets the policy file served at /.well-known/mta-sts.txt.
func (h *PolicyHost) SetPolicy(p string) {
	h.mu.Lock()
	h.policy = p
	h.mu.Unlock()
}

// SetHandler replaces what the host serves.
func (h *PolicyHost) SetHandler(f http.HandlerFunc) {
	h.mu.Lock()
	h.handler = f
	h.mu.Unlock()
}

// Requests returns how many requests the host has received.
func (h *PolicyHost) Requests() int64 { return h.requests.Load() }

func (h *PolicyHost) serve(w http.ResponseWriter, req *http.Request) {
	h.requests.Add(1)
	h.mu.Lock()
	p, f := h.policy, h.handler
	h.mu.Unlock()
	if f != nil {
		f(w, req)
		return
	}
	if req.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, p)
}

// Policy returns an RFC 8461 policy file.
func Policy(mode string, maxAge int, mx ...string) string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + mode + "\r\n")
	for _, m := range mx {
		b.WriteString("mx: " + m + "\r\n")
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", maxAge)
	return b.String()
}

// PolicyHosts returns the policy host name of each domain: mta-sts.<d>.
func PolicyHosts(domains ...string) []string {
	out := make([]string, len(domains))
	for i, d := range domains {
		out[i] = "mta-sts." + d
	}
	return out
}
