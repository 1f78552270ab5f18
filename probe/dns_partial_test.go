package probe

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// failingZone serves z on a miekg/dns server of its own on 127.0.0.1,
// except that the questions in fail (lower-case FQDN and type) are
// answered rcode: one address family of a name can fail while the other
// answers. It returns the server's address, for Config.Resolver.
func failingZone(t *testing.T, z *probetest.Zone, rcode int, fail map[dns.Question]bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if len(req.Question) == 1 {
			q := req.Question[0]
			q.Name = strings.ToLower(q.Name)
			if fail[q] {
				m := new(dns.Msg)
				m.SetRcode(req, rcode)
				_ = w.WriteMsg(m)
				return
			}
		}
		z.ServeDNS(w, req)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func question(name string, qtype uint16) dns.Question {
	return dns.Question{Name: dns.Fqdn(name), Qtype: qtype, Qclass: dns.ClassINET}
}

// TestProbePartialAddressLookup: when one address family's lookup of an
// MX host fails temporarily and the other's gives addresses, those
// addresses are probed (as Postfix uses them), the result says which
// lookup failed, and the cache learns nothing from the incomplete picture.
func TestProbePartialAddressLookup(t *testing.T) {
	tests := []struct {
		name    string
		ip      string // the MX host's address of the family that answers
		fail    uint16 // the family whose lookup fails
		reason  []string
		learned bool
	}{
		{name: "AAAA SERVFAIL, A answers", ip: "127.0.0.2", fail: dns.TypeAAAA,
			reason: []string{"address lookup incomplete", "mx1.part.test", "lookup of AAAA records failed", "SERVFAIL", "only IPv4"}},
		{name: "A SERVFAIL, AAAA answers", ip: "::1", fail: dns.TypeA,
			reason: []string{"address lookup incomplete", "mx1.part.test", "lookup of A records failed", "SERVFAIL", "only IPv6"}},
		{name: "both answer: learned", ip: "127.0.0.2", learned: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.ip, ":") {
				if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				} else {
					l.Close()
				}
			}
			z, f := loopback(t)
			z.MX(t, "part.test", 10, "mx1.part.test", tc.ip)
			f.GoodMX(t, tc.ip, time.Time{}, "mx1.part.test")
			fail := map[dns.Question]bool{}
			if tc.fail != 0 {
				fail[question("mx1.part.test", tc.fail)] = true
			}
			resolver := failingZone(t, z, dns.RcodeServerFailure, fail)
			p := testProber(t, z, f, func(c *Config) { c.Resolver = resolver })
			r, err := p.Probe(context.Background(), "part.test")
			if err != nil {
				t.Fatal(err)
			}
			dump, _ := json.MarshalIndent(r, "", "  ")
			// The addresses found are probed and judged.
			if r.Status != StatusOK || len(r.MX) != 1 || len(r.MX[0].Addrs) != 1 || !r.MX[0].Addrs[0].Reached {
				t.Fatalf("status %q, MX %+v, want ok with the one address probed\n%s", r.Status, r.MX, dump)
			}
			for _, s := range tc.reason {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("Reason %q lacks %q", r.Reason, s)
				}
			}
			wantClass := ""
			if tc.fail != 0 {
				wantClass = ClassDNSTemp
			}
			if r.MX[0].ErrorClass != wantClass || AddrsKnown(r) != tc.learned {
				t.Errorf("MX error class %q, AddrsKnown %v; want %q, %v\n%s", r.MX[0].ErrorClass, AddrsKnown(r), wantClass, tc.learned, dump)
			}
		})
	}
}
