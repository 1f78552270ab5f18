package probe

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// udpOnlyDNS serves h over UDP only on 127.0.0.1 until the test ends: a
// truncated answer then has no TCP server to retry with.
func udpOnlyDNS(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// rawUDP returns a UDP address that reads queries and answers each with
// reply, or never answers when reply is nil.
func rawUDP(t *testing.T, reply []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply != nil {
				_, _ = pc.WriteTo(reply, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// TestProbeDNSTransportErrors: when the resolver cannot be reached or
// does not answer properly — silence (timeout), a closed port, a truncated
// answer whose TCP retry fails, bytes that are not DNS, an MX answer
// whose host address lookups time out — the probe is temporary
// (dns-temp), within the bounded retries, and never "no MX" (implicit MX)
// or "no such domain". The zone's MX host would answer if it were tried.
func TestProbeDNSTransportErrors(t *testing.T) {
	const timeout = 300 * time.Millisecond
	silentUDP := func(t *testing.T) string { return rawUDP(t, nil) }
	garbageUDP := func(t *testing.T) string { return rawUDP(t, []byte("\x00\x01not a dns message")) }
	closedUDP := func(t *testing.T) string {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		pc.Close()
		return addr
	}
	truncated := func(t *testing.T) string {
		return udpOnlyDNS(t, func(w dns.ResponseWriter, req *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Truncated = true
			_ = w.WriteMsg(m)
		})
	}
	// The MX lookup answers; A and AAAA lookups of the host go unanswered.
	hostsTimeOut := func(t *testing.T) string {
		return udpOnlyDNS(t, func(w dns.ResponseWriter, req *dns.Msg) {
			if req.Question[0].Qtype != dns.TypeMX {
				return // no reply: the client times out
			}
			m := new(dns.Msg)
			m.SetReply(req)
			mx, err := dns.NewRR("dnsfail.test. 300 IN MX 10 mx1.dnsfail.test.")
			if err != nil {
				t.Error(err)
			}
			m.Answer = append(m.Answer, mx)
			_ = w.WriteMsg(m)
		})
	}
	tests := []struct {
		name     string
		resolver func(t *testing.T) string
		reason   []string
		// maxTime bounds the whole probe: two UDP tries per question
		// (and one TCP retry after TC), each within timeout.
		maxTime time.Duration
	}{
		{"resolver silent: timeout", silentUDP, []string{"dnsfail.test MX", "i/o timeout"}, 4 * timeout},
		{"resolver port closed", closedUDP, []string{"dnsfail.test MX"}, 4 * timeout},
		{"truncated answer, no TCP", truncated, []string{"dnsfail.test MX"}, 5 * timeout},
		{"answer is not DNS", garbageUDP, []string{"dnsfail.test MX"}, 4 * timeout},
		{"MX host address lookups time out", hostsTimeOut, []string{"mx1.dnsfail.test A", "i/o timeout"}, 10 * timeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z, f := loopback(t)
			// What a working resolver would say: an MX that answers.
			z.MX(t, "dnsfail.test", 10, "mx1.dnsfail.test", "127.0.0.2")
			f.GoodMX(t, "127.0.0.2", time.Time{}, "mx1.dnsfail.test")
			resolver := tc.resolver(t)
			p := testProber(t, z, f, func(c *Config) { c.Resolver = resolver; c.Timeout = timeout })
			start := time.Now()
			r, err := p.Probe(context.Background(), "dnsfail.test")
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != StatusTemporary {
				t.Errorf("status %q (%s), want %q", r.Status, r.Reason, StatusTemporary)
			}
			class := r.ErrorClass // the MX lookup's, or the MX host's address lookup's
			if class == "" && len(r.MX) > 0 {
				class = r.MX[0].ErrorClass
			}
			if class != ClassDNSTemp {
				t.Errorf("error class %q, want %q (reason %q)", class, ClassDNSTemp, r.Reason)
			}
			for _, s := range tc.reason {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("reason %q lacks %q", r.Reason, s)
				}
			}
			for _, mx := range r.MX {
				if mx.Host == "dnsfail.test" {
					t.Errorf("a failed lookup was taken for no MX records (implicit MX): %+v", r.MX)
				}
			}
			if f.Accepted("127.0.0.2") != 0 {
				t.Errorf("the MX was connected to although its address was never learned")
			}
			if took > tc.maxTime+time.Second {
				t.Errorf("probe took %v, want at most about %v", took, tc.maxTime)
			}
			for _, l := range r.Levels {
				if l.OK {
					t.Errorf("a level passed without any answer: %+v", r.Levels)
					break
				}
			}
		})
	}
}
