package probe

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// levels is a compact way to write expected level verdicts: may, encrypt,
// verify, secure.
type levels [4]bool

func (r *Result) levelBits() levels {
	var l levels
	for i, name := range judgedLevels {
		l[i] = r.Levels[name].OK
	}
	return l
}

func TestProbeScenarios(t *testing.T) {
	const (
		ip1 = "127.0.0.2"
		ip2 = "127.0.0.3"
	)
	tests := []struct {
		name   string
		setup  func(t *testing.T, z *probetest.Zone, f *probetest.Farm)
		target string // %d is replaced by the farm's port
		mod    func(*Config)
		status string
		levels levels
		reason []string // substrings of Result.Reason
		class  string   // ErrorClass of the first address, or of the result
		check  func(t *testing.T, r *Result)
	}{
		{
			name: "valid certificate",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "good.test", 10, "mx1.good.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "mx1.good.test")
			},
			target: "good.test",
			status: StatusOK,
			levels: levels{true, true, true, true},
			check: func(t *testing.T, r *Result) {
				a := r.MX[0].Addrs[0]
				if !strings.HasPrefix(a.Banner, "fake-mx.") || a.TLS == nil || a.TLS.Version != "TLSv1.3" ||
					a.TLS.Cipher == "" || len(a.TLS.Chain) != 1 || a.TLS.Chain[0].DNSNames[0] != "mx1.good.test" ||
					!strings.Contains(a.TLS.Chain[0].Issuer, "tlspolicyd test CA") || a.TLS.Chain[0].NotAfter.IsZero() ||
					len(a.TLS.Chain[0].SHA256) != 95 {
					t.Errorf("recorded session incomplete: %+v %+v", a, a.TLS)
				}
				if r.NextHop != "good.test" || r.MX[0].Preference != 10 || !r.Expires.After(r.Time) {
					t.Errorf("result header: %+v", r)
				}
			},
		},
		{
			name: "MX of a hoster: verify yes, secure no",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "customer.test", 10, "mx.hoster.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "mx.hoster.test")
			},
			target: "customer.test",
			status: StatusOK,
			levels: levels{true, true, true, false},
			reason: []string{"secure would fail", "mx.hoster.test[127.0.0.2]", "do not match customer.test or a subdomain"},
		},
		{
			name: "wildcard certificate matches MX and next-hop subdomain",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "wild.test", 10, "mx.in.wild.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "*.wild.test")
			},
			target: "wild.test",
			status: StatusOK,
			levels: levels{true, true, true, true},
		},
		{
			name: "no STARTTLS",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "plain.test", 10, "mx1.plain.test", ip1)
				f.PlainMX(t, ip1)
			},
			target: "plain.test",
			status: StatusNoSTARTTLS,
			levels: levels{true, false, false, false},
			reason: []string{"mx1.plain.test[127.0.0.2]:", ": no STARTTLS offered"},
		},
		{
			name: "expired certificate",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "expired.test", 10, "mx1.expired.test", ip1)
				cert := f.CA.Issue(t, []string{"mx1.expired.test"}, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
				f.Serve(t, ip1, &tls.Config{Certificates: []tls.Certificate{cert}})
			},
			target: "expired.test",
			status: StatusOK,
			levels: levels{true, true, false, false},
			reason: []string{"verify would fail", "mx1.expired.test[127.0.0.2]", "expired"},
		},
		{
			name: "wrong name",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "wrongname.test", 10, "mx1.wrongname.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "somewhere-else.test")
			},
			target: "wrongname.test",
			status: StatusOK,
			levels: levels{true, true, false, false},
			reason: []string{"certificate names [somewhere-else.test] do not match mx1.wrongname.test"},
		},
		{
			name: "self-signed",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "selfsigned.test", 10, "mx1.selfsigned.test", ip1)
				cert := probetest.SelfSigned(t, []string{"mx1.selfsigned.test"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
				f.Serve(t, ip1, &tls.Config{Certificates: []tls.Certificate{cert}})
			},
			target: "selfsigned.test",
			status: StatusOK,
			levels: levels{true, true, false, false},
			reason: []string{"not trusted", "unknown authority"},
		},
		{
			name: "TLS 1.0 only",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "old.test", 10, "mx1.old.test", ip1)
				cert := f.CA.Issue(t, []string{"mx1.old.test"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
				f.Serve(t, ip1, &tls.Config{Certificates: []tls.Certificate{cert},
					MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
			},
			target: "old.test",
			status: StatusOK,
			levels: levels{true, true, true, true},
			check: func(t *testing.T, r *Result) {
				if v := r.MX[0].Addrs[0].TLS.Version; v != "TLSv1" {
					t.Errorf("TLS version = %q, want TLSv1", v)
				}
			},
		},
		{
			name: "tarpit never sends a banner",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "tarpit.test", 10, "mx1.tarpit.test", ip1)
				f.Raw(t, ip1, probetest.Tarpit)
			},
			mod:    func(c *Config) { c.Timeout = 300 * time.Millisecond },
			target: "tarpit.test",
			status: StatusUnreachable,
			reason: []string{"mx1.tarpit.test[127.0.0.2]", "waiting for banner", "timeout"},
			class:  ClassTimeout,
		},
		{
			name: "421 banner is temporary",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "busy.test", 10, "mx1.busy.test", ip1)
				f.Raw(t, ip1, probetest.BannerThenWait("421-4.3.2 busy\r\n421 4.3.2 try again later\r\n"))
			},
			target: "busy.test",
			status: StatusTemporary,
			reason: []string{"banner: 421 4.3.2 busy …"},
			class:  ClassBannerTemp,
		},
		{
			name: "554 banner refuses",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "closed.test", 10, "mx1.closed.test", ip1)
				f.Raw(t, ip1, probetest.BannerThenWait("554 5.7.1 no mail here\r\n"))
			},
			target: "closed.test",
			status: StatusUnreachable,
			reason: []string{"554 5.7.1 no mail here"},
			class:  ClassBannerRefused,
		},
		{
			name: "multi-line banner",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "chatty.test", 10, "mx1.chatty.test", ip1)
				f.Raw(t, ip1, func(c net.Conn) {
					_, _ = c.Write([]byte("220-mx1.chatty.test welcome\r\n220-second line\r\n220 ready\r\n"))
					probetest.BannerThenWait("")(c)
				})
			},
			mod:    func(c *Config) { c.Timeout = time.Second },
			target: "chatty.test",
			status: StatusUnreachable, // answers nothing to EHLO
			class:  ClassTimeout,
			check: func(t *testing.T, r *Result) {
				if b := r.MX[0].Addrs[0].Banner; b != "mx1.chatty.test welcome\nsecond line\nready" {
					t.Errorf("banner = %q", b)
				}
			},
		},
		{
			name: "EHLO refused: Postfix falls back to HELO, no TLS",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "helo.test", 10, "mx1.helo.test", ip1)
				f.Raw(t, ip1, probetest.Script{Replies: map[string]string{"": "220 mx1.helo.test\r\n", "EHLO": "502 5.5.1 what?\r\n"}}.Handle)
			},
			target: "helo.test",
			status: StatusNoSTARTTLS,
			levels: levels{true, false, false, false},
		},
		{
			name: "STARTTLS advertised but refused",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "refuse.test", 10, "mx1.refuse.test", ip1)
				f.Raw(t, ip1, probetest.Script{Replies: map[string]string{"": "220 mx1.refuse.test\r\n",
					"EHLO": "250-mx1.refuse.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n", "STARTTLS": "454 4.7.0 TLS not available\r\n"}}.Handle)
			},
			target: "refuse.test",
			status: StatusNoSTARTTLS,
			levels: levels{true, false, false, false},
			reason: []string{"STARTTLS refused: 454 4.7.0 TLS not available"},
			class:  ClassSTARTTLS,
		},
		{
			name: "TLS handshake fails",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "nohs.test", 10, "mx1.nohs.test", ip1)
				f.Raw(t, ip1, probetest.Script{Replies: map[string]string{"": "220 mx1.nohs.test\r\n",
					"EHLO": "250-mx1.nohs.test\r\n250 starttls\r\n", "STARTTLS": "220 go ahead\r\n"}}.Handle)
			},
			target: "nohs.test",
			status: StatusTLSFailed,
			levels: levels{true, false, false, false},
			reason: []string{"TLS handshake"},
			class:  ClassHandshake,
		},
		{
			name: "plaintext injected after the STARTTLS reply",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "inject.test", 10, "mx1.inject.test", ip1)
				f.Raw(t, ip1, probetest.Script{Replies: map[string]string{"": "220 mx1.inject.test\r\n",
					"EHLO": "250-mx1.inject.test\r\n250 STARTTLS\r\n", "STARTTLS": "220 go ahead\r\n250 injected\r\n"}}.Handle)
			},
			target: "inject.test",
			status: StatusTLSFailed,
			levels: levels{true, false, false, false},
			class:  ClassHandshake, // this fake speaks no TLS
			check: func(t *testing.T, r *Result) {
				if w := r.MX[0].Addrs[0].Warning; !strings.Contains(w, "plaintext after the STARTTLS reply discarded") {
					t.Errorf("warning = %q", w)
				}
			},
		},
		{
			name: "one of two MX down: not counted",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "half.test", 10, "mx1.half.test", ip1)
				z.MX(t, "half.test", 20, "mx2.half.test", ip2) // nothing listens
				f.GoodMX(t, ip1, time.Time{}, "mx1.half.test")
			},
			target: "half.test",
			status: StatusOK,
			levels: levels{true, true, true, true},
			reason: []string{"not reached (not counted): mx2.half.test[127.0.0.3]", "connect"},
		},
		{
			name: "one of two MX without STARTTLS",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "mixed.test", 10, "mx1.mixed.test", ip1)
				z.MX(t, "mixed.test", 20, "mx2.mixed.test", ip2)
				f.GoodMX(t, ip1, time.Time{}, "mx1.mixed.test")
				f.PlainMX(t, ip2)
			},
			target: "mixed.test",
			status: StatusNoSTARTTLS,
			levels: levels{true, false, false, false},
			reason: []string{"mx2.mixed.test[127.0.0.3]", "no STARTTLS offered"},
			check: func(t *testing.T, r *Result) {
				if len(r.MX) != 2 || r.MX[0].Host != "mx1.mixed.test" || r.MX[1].Host != "mx2.mixed.test" {
					t.Errorf("MX order: %+v", r.MX)
				}
			},
		},
		{
			name: "null MX accepts no mail",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.Add(t, "nullmx.test. 300 IN MX 0 .")
			},
			target: "nullmx.test",
			status: StatusNoMail,
			reason: []string{"null MX"},
		},
		{
			name: "SERVFAIL is temporary, never no-MX",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.Rcode("broken.test", dns.RcodeServerFailure)
				z.Add(t, "broken.test. 300 IN A 127.0.0.2") // must not be used as implicit MX
				f.GoodMX(t, ip1, time.Time{}, "broken.test")
			},
			target: "broken.test",
			status: StatusTemporary,
			reason: []string{"SERVFAIL"},
			class:  ClassDNSTemp,
			check: func(t *testing.T, r *Result) {
				if len(r.MX) != 0 {
					t.Errorf("SERVFAIL led to MX hosts %+v", r.MX)
				}
			},
		},
		{
			name:   "NXDOMAIN: no such domain, not temporary",
			setup:  func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {},
			target: "nonexistent.test",
			status: StatusUnreachable,
			reason: []string{"no such domain"},
			class:  ClassNXDomain,
		},
		{
			name: "NODATA: implicit MX",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.Add(t, "implicit.test. 300 IN A "+ip1)
				f.GoodMX(t, ip1, time.Time{}, "implicit.test")
			},
			target: "implicit.test",
			status: StatusOK,
			levels: levels{true, true, true, true},
			check: func(t *testing.T, r *Result) {
				if len(r.MX) != 1 || !r.MX[0].Implicit || r.MX[0].Host != "implicit.test" {
					t.Errorf("MX = %+v, want implicit MX implicit.test", r.MX)
				}
			},
		},
		{
			name: "NODATA and no address",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.Add(t, "txtonly.test. 300 IN TXT \"v=spf1 -all\"")
			},
			target: "txtonly.test",
			status: StatusUnreachable,
			reason: []string{"txtonly.test", "no A or AAAA record"},
		},
		{
			name: "MX host address lookup SERVFAIL",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "hostfail.test", 10, "mx1.hostfail.test", "")
				z.Rcode("mx1.hostfail.test", dns.RcodeServerFailure)
			},
			target: "hostfail.test",
			status: StatusTemporary,
			reason: []string{"mx1.hostfail.test", "SERVFAIL"},
		},
		{
			name: "[host] probes the host, no MX lookup",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.Add(t, "relay.test. 300 IN A "+ip1)
				z.MX(t, "relay.test", 10, "elsewhere.test", ip2) // must be ignored
				f.GoodMX(t, ip1, time.Time{}, "relay.test")
			},
			target: "[relay.test]",
			status: StatusOK,
			levels: levels{true, true, true, true},
			check: func(t *testing.T, r *Result) {
				if len(r.MX) != 1 || r.MX[0].Host != "relay.test" || r.Target != "[relay.test]" {
					t.Errorf("MX = %+v", r.MX)
				}
			},
		},
		{
			name: "[ip]:port literal, no DNS, port from the target",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				f.GoodMX(t, ip1, time.Time{}, "mx.literal.test")
			},
			mod:    func(c *Config) { c.Port = 1 },
			target: "[127.0.0.2]:%d",
			status: StatusOK,
			levels: levels{true, true, false, false},
			check: func(t *testing.T, r *Result) {
				if r.MX[0].Addrs[0].Addr != ip1 {
					t.Errorf("addr = %+v", r.MX[0].Addrs)
				}
			},
		},
		{
			name: "domain:port does the MX lookup, port from the target",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "ported.test", 10, "mx1.ported.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "mx1.ported.test")
			},
			mod:    func(c *Config) { c.Port = 1 },
			target: "PORTED.test.:%d",
			status: StatusOK,
			levels: levels{true, true, true, true},
			check: func(t *testing.T, r *Result) {
				if r.MX[0].Host != "mx1.ported.test" || !strings.HasPrefix(r.Target, "ported.test:") {
					t.Errorf("result = %+v", r)
				}
			},
		},
		{
			name: "private address refused unless AllowPrivate",
			setup: func(t *testing.T, z *probetest.Zone, f *probetest.Farm) {
				z.MX(t, "looksPublic.test", 10, "mx1.lookspublic.test", ip1)
				f.GoodMX(t, ip1, time.Time{}, "mx1.lookspublic.test")
			},
			mod:    func(c *Config) { c.AllowPrivate = false },
			target: "lookspublic.test",
			status: StatusUnreachable,
			reason: []string{"mx1.lookspublic.test[127.0.0.2]", "non-public address"},
			class:  ClassPrivate,
			check: func(t *testing.T, r *Result) {
				// Checked via the farm below: no connection at all.
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z, f := loopback(t)
			tc.setup(t, z, f)
			p := testProber(t, z, f, tc.mod)
			target := tc.target
			if strings.Contains(target, "%d") {
				target = fmt.Sprintf(target, f.Port)
			}
			r, err := p.Probe(context.Background(), target)
			if err != nil {
				t.Fatalf("Probe: %v", err)
			}
			dump, _ := json.MarshalIndent(r, "", "  ")
			if r.Status != tc.status {
				t.Fatalf("Status = %q, want %q\n%s", r.Status, tc.status, dump)
			}
			if got := r.levelBits(); got != tc.levels {
				t.Errorf("levels (may, encrypt, verify, secure) = %v, want %v\n%s", got, tc.levels, dump)
			}
			for _, s := range tc.reason {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("Reason %q lacks %q", r.Reason, s)
				}
			}
			if tc.class != "" {
				got := r.ErrorClass
				if got == "" && len(r.MX) > 0 && len(r.MX[0].Addrs) > 0 {
					got = r.MX[0].Addrs[0].ErrorClass
				}
				if got != tc.class {
					t.Errorf("error class = %q, want %q\n%s", got, tc.class, dump)
				}
			}
			if len(r.Levels) != 4 {
				t.Errorf("Levels has %d entries, want 4", len(r.Levels))
			}
			if tc.class == ClassPrivate && f.Accepted(ip1) != 0 {
				t.Errorf("refused private address was connected to %d times", f.Accepted(ip1))
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// A level fails with a reason naming every failing host, and encrypt
// failures name the MX in Postfix's host[addr] form.
func TestProbeLevelReasons(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "lawfirm.example", 10, "mx1.lawfirm.example", "127.0.0.2")
	f.PlainMX(t, "127.0.0.2")
	p := testProber(t, z, f, func(c *Config) { c.Port = f.Port })
	r, err := p.Probe(context.Background(), "lawfirm.example")
	if err != nil {
		t.Fatal(err)
	}
	want := "mx1.lawfirm.example[127.0.0.2]:" + strconv.Itoa(f.Port) + ": no STARTTLS offered"
	for _, l := range []string{LevelEncrypt, LevelVerify, LevelSecure} {
		if v := r.Levels[l]; v.OK || v.Reason != want {
			t.Errorf("Levels[%s] = %+v, want reason %q", l, v, want)
		}
	}
	if v := r.Levels[LevelMay]; !v.OK {
		t.Errorf("may = %+v, want OK", v)
	}
}

func TestProbeIPv6Loopback(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l.Close()
	z, f := loopback(t)
	if l, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(f.Port))); err != nil {
		t.Skipf("cannot listen on [::1]:%d: %v", f.Port, err)
	} else {
		l.Close()
	}
	z.MX(t, "six.test", 10, "mx6.six.test", "::1")
	f.GoodMX(t, "::1", time.Time{}, "mx6.six.test")
	p := testProber(t, z, f, nil)
	for _, target := range []string{"six.test", "[::1]", "[ipv6:::1]"} {
		r, err := p.Probe(context.Background(), target)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != StatusOK || r.MX[0].Addrs[0].Addr != "::1" {
			t.Errorf("%s: status %q addrs %+v", target, r.Status, r.MX[0].Addrs)
		}
	}
	// And refused without AllowPrivate.
	p = testProber(t, z, f, func(c *Config) { c.AllowPrivate = false })
	r, _ := p.Probe(context.Background(), "[::1]")
	if r.Status != StatusUnreachable || r.MX[0].Addrs[0].ErrorClass != ClassPrivate {
		t.Errorf("[::1] without AllowPrivate: %+v", r)
	}
}

// Two concurrent probes of one target share one SMTP connection.
func TestProbeSingleflight(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "once.test", 10, "mx1.once.test", "127.0.0.2")
	// A slow banner keeps the first probe in flight while the others join.
	release := make(chan struct{})
	f.Raw(t, "127.0.0.2", func(c net.Conn) {
		<-release
		probetest.BannerThenWait("421 4.3.2 mx1.once.test busy\r\n")(c)
	})
	p := testProber(t, z, f, func(c *Config) { c.Timeout = 2 * time.Second })
	const n = 5
	results := make([]*Result, n)
	var wg, started sync.WaitGroup
	for i := range n {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			r, err := p.Probe(context.Background(), []string{"once.test", "ONCE.test."}[i%2])
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	// Hold the banner until every caller is under way and has had time
	// to join the probe in flight.
	started.Wait()
	waitFor(t, "the connection", func() bool { return f.Accepted("127.0.0.2") > 0 })
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := f.Accepted("127.0.0.2"); got != 1 {
		t.Errorf("fake MX accepted %d connections, want 1", got)
	}
	for i := 1; i < n; i++ {
		if results[i] != results[0] {
			t.Errorf("probe %d got a different result", i)
		}
	}
}

// A caller whose context ends stops waiting; the probe itself goes on.
func TestProbeContextEnds(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "slow.test", 10, "mx1.slow.test", "127.0.0.2")
	f.Raw(t, "127.0.0.2", probetest.Tarpit)
	p := testProber(t, z, f, func(c *Config) { c.Timeout = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Probe(ctx, "slow.test"); err == nil {
		t.Fatal("Probe returned no error for an ended context")
	}
	r, err := p.Probe(context.Background(), "slow.test")
	if err != nil || r.Status != StatusUnreachable {
		t.Fatalf("second probe: %v %+v", err, r)
	}
}

func TestProbeBadTarget(t *testing.T) {
	p := New(Config{Resolver: "127.0.0.1:1", Logger: nil})
	for _, s := range []string{"", "[", "[x]y", "a..b", "192.0.2.1", "example.com:0", "example.com:99999", "ex ample.com", "[1:2]:"} {
		if _, err := p.Probe(context.Background(), s); err == nil {
			t.Errorf("Probe(%q) accepted a malformed target", s)
		}
	}
}

// The JSON form round-trips: the cache file and --json depend on it.
func TestResultJSON(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "json.test", 10, "mx1.json.test", "127.0.0.2")
	f.GoodMX(t, "127.0.0.2", time.Time{}, "mx1.json.test")
	p := testProber(t, z, f, nil)
	r, err := p.Probe(context.Background(), "json.test")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"target":"json.test"`, `"levels":{"encrypt":{"ok":true}`, `"status":"ok"`, `"starttls":true`, `"version":"TLSv1.3"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Errorf("JSON does not round-trip:\n%s\n%s", b, b2)
	}
}

// A big MX RRset is truncated over UDP and fetched over TCP; only the
// MaxMX most preferred hosts are probed, in preference order.
func TestProbeManyMXOverTCP(t *testing.T) {
	z, f := loopback(t)
	long := strings.Repeat("a", 50)
	for i := 40; i >= 1; i-- {
		host := fmt.Sprintf("mx%02d-%s.many.test", i, long)
		z.MX(t, "many.test", i, host, "127.0.0.2")
	}
	f.GoodMX(t, "127.0.0.2", time.Time{}, "*.many.test")
	p := testProber(t, z, f, nil)
	r, err := p.Probe(context.Background(), "many.test")
	if err != nil {
		t.Fatal(err)
	}
	if z.TCPQueries() == 0 {
		t.Error("no query went over TCP: truncation not handled")
	}
	if len(r.MX) != DefaultMaxMX {
		t.Fatalf("%d MX hosts probed, want %d", len(r.MX), DefaultMaxMX)
	}
	for i, mx := range r.MX {
		if int(mx.Preference) != i+1 || len(mx.Addrs) != 1 || !mx.Addrs[0].Reached {
			t.Errorf("MX %d = %s pref %d %+v", i, mx.Host, mx.Preference, mx.Addrs)
		}
	}
	if r.Status != StatusOK || !r.Levels[LevelSecure].OK {
		t.Errorf("status %s levels %+v", r.Status, r.Levels)
	}
}

// MaxAddrs caps the sessions of one target.
func TestProbeMaxAddrs(t *testing.T) {
	z, f := loopback(t)
	for i := 2; i <= 6; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		z.MX(t, "wide.test", 10, "mx.wide.test", ip)
		f.GoodMX(t, ip, time.Time{}, "mx.wide.test")
	}
	p := testProber(t, z, f, func(c *Config) { c.MaxAddrs = 3 })
	r, err := p.Probe(context.Background(), "wide.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.MX) != 1 || len(r.MX[0].Addrs) != 3 || !strings.Contains(r.MX[0].Error, "2 address(es) not probed") {
		t.Errorf("MX = %+v", r.MX)
	}
	if r.Status != StatusOK {
		t.Errorf("status %s: %s", r.Status, r.Reason)
	}
}
