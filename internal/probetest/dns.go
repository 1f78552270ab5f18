package probetest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Zone is an in-process DNS server on 127.0.0.1 (UDP and TCP, one port):
// names with records answer NOERROR (NODATA for a missing type), names
// given an rcode answer it, everything else is NXDOMAIN. A UDP answer
// larger than the client's EDNS0 buffer (512 bytes without EDNS0) is
// truncated with TC set, so that the client has to retry over TCP.
type Zone struct {
	Addr    string // host:port, for the prober's Resolver
	mu      sync.RWMutex
	rrs     map[string][]dns.RR // by lower-case FQDN
	rcodes  map[string]int
	queries atomic.Int64
	tcp     atomic.Int64
}

// NewZone starts a DNS server, stopped at the end of the test.
func NewZone(t testing.TB) *Zone {
	t.Helper()
	z := &Zone{rrs: map[string][]dns.RR{}, rcodes: map[string]int{}}
	z.Addr = StartDNS(t, z)
	return z
}

// StartDNS serves h over UDP and TCP on one 127.0.0.1 port until the end
// of the test and returns that host:port.
func StartDNS(t testing.TB, h dns.Handler) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	for tries := 0; ; tries++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if tries > 10 {
			t.Fatal(err)
		}
	}
	addr := pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return addr
}

// ServeDNS implements dns.Handler.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.RLock()
	rc, hasRC := z.rcodes[name]
	rrs, exists := z.rrs[name]
	z.mu.RUnlock()
	switch {
	case hasRC:
		m.Rcode = rc
	case !exists:
		m.Rcode = dns.RcodeNameError
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size) // sets TC when it had to drop records
	} else {
		z.tcp.Add(1)
	}
	_ = w.WriteMsg(m)
}

// Queries returns how many queries the zone has answered.
func (z *Zone) Queries() int64 { return z.queries.Load() }

// TCPQueries returns how many of those came over TCP.
func (z *Zone) TCPQueries() int64 { return z.tcp.Load() }

// Add publishes a record in zone-file syntax.
func (z *Zone) Add(t testing.TB, rr string) {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatalf("bad RR %q: %v", rr, err)
	}
	name := strings.ToLower(r.Header().Name)
	z.mu.Lock()
	z.rrs[name] = append(z.rrs[name], r)
	z.mu.Unlock()
}

// Rcode makes name answer rc (e.g. dns.RcodeServerFailure).
func (z *Zone) Rcode(name string, rc int) {
	z.mu.Lock()
	z.rcodes[dns.Fqdn(strings.ToLower(name))] = rc
	z.mu.Unlock()
}

// MX publishes "domain MX pref host" and host's address ip: an A record,
// an AAAA record if ip is IPv6, none if ip is "".
func (z *Zone) MX(t testing.TB, domain string, pref int, host, ip string) {
	t.Helper()
	z.Add(t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host))
	if ip == "" {
		return
	}
	typ := "A"
	if strings.Contains(ip, ":") {
		typ = "AAAA"
	}
	z.Add(t, fmt.Sprintf("%s. 300 IN %s %s", host, typ, ip))
}
