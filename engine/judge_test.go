package engine

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Digests of the leaf that judgeResult's servers present.
var (
	certFP  = "11:" + strings.Repeat("22:", 30) + "33"
	pkeyFP  = "44:" + strings.Repeat("55:", 30) + "66"
	wrongFP = strings.Repeat("AB:", 31) + "AB"
)

// server is what one MX address showed: nil TLS is a server without
// STARTTLS.
type server struct {
	host string
	tls  *probe.TLSInfo
}

// tlsInfo is a TLS 1.3 session whose trusted leaf names names, checked by
// the probe's default verify and secure lists for mx1.example.com and
// example.com; mod, if set, changes it first.
func tlsInfo(names []string, mod func(*probe.TLSInfo)) *probe.TLSInfo {
	ti := &probe.TLSInfo{Version: "TLSv1.3", Trusted: true,
		Chain: []probe.CertInfo{{DNSNames: names, SHA256: certFP, PubkeySHA256: pkeyFP, NotAfter: time.Now().Add(90 * 24 * time.Hour)}}}
	if mod != nil {
		mod(ti)
	}
	ti.Verify, _ = ti.CheckMatch(probe.DefaultVerifyMatch, "mx1.example.com", "example.com", true)
	ti.Secure, _ = ti.CheckMatch(probe.DefaultSecureMatch, "mx1.example.com", "example.com", true)
	return ti
}

func version(v string) func(*probe.TLSInfo) { return func(ti *probe.TLSInfo) { ti.Version = v } }

// judgeResult is a probe result for example.com with one address per
// server and the level verdicts the prober would give (delivery to every
// address).
func judgeResult(servers ...server) *probe.Result {
	r := &probe.Result{Target: "example.com", NextHop: "example.com", Port: 25, Status: probe.StatusOK}
	ok := map[string]bool{probe.LevelMay: true, probe.LevelEncrypt: true, probe.LevelVerify: true, probe.LevelSecure: true}
	for i, s := range servers {
		a := probe.AddrResult{Addr: "192.0.2." + string(rune('1'+i)), Port: 25, Reached: true, STARTTLS: s.tls != nil, TLS: s.tls}
		r.MX = append(r.MX, probe.MXResult{Host: s.host, Preference: uint16(10 * (i + 1)), Addrs: []probe.AddrResult{a}})
		ok[probe.LevelEncrypt] = ok[probe.LevelEncrypt] && s.tls != nil
		ok[probe.LevelVerify] = ok[probe.LevelVerify] && s.tls != nil && s.tls.Verify.OK
		ok[probe.LevelSecure] = ok[probe.LevelSecure] && s.tls != nil && s.tls.Secure.OK
	}
	r.Levels = map[string]probe.LevelVerdict{}
	for l, v := range ok {
		r.Levels[l] = probe.LevelVerdict{OK: v}
		if !v {
			r.Levels[l] = probe.LevelVerdict{Reason: l + " fails"}
		}
	}
	if !ok[probe.LevelEncrypt] {
		r.Status = probe.StatusNoSTARTTLS
	}
	return r
}

// TestJudgeAttributes: Judge checks what a policy's attributes demand,
// not only its level, and raises a finding only where Postfix would
// defer for certain.
func TestJudgeAttributes(t *testing.T) {
	mxName := []string{"mx1.example.com"}
	one := func(ti *probe.TLSInfo) []server { return []server{{"mx1.example.com", ti}} }
	capped := func(ti *probe.TLSInfo) {
		ti.Chain[0].DNSNames = []string{"a.hoster.net"}
		ti.Chain[0].MoreDNSNames = 9000
	}
	untrusted := func(ti *probe.TLSInfo) {
		ti.Trusted, ti.TrustError = false, "x509: certificate signed by unknown authority"
	}
	tests := []struct {
		name    string
		policy  string
		servers []server
		want    string // substring of the finding's reason; "" = no finding
	}{
		// protocols= (case 1): the prober offers TLSv1 to TLSv1.3, so the
		// version recorded is the server's highest.
		{"server below >=TLSv1.2", "encrypt protocols=>=TLSv1.2", one(tlsInfo(mxName, version("TLSv1"))),
			"mx1.example.com[192.0.2.1]: the server's highest TLS version TLSv1 is below TLSv1.2"},
		{"server below list form", "encrypt protocols=TLSv1.2:TLSv1.3", one(tlsInfo(mxName, version("TLSv1.1"))),
			"TLSv1.1 is below TLSv1.2"},
		{"server below exclusions", "encrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", one(tlsInfo(mxName, version("TLSv1"))),
			"TLSv1 is below TLSv1.2"},
		{"verify with protocols", "verify protocols=!TLSv1:!TLSv1.1", one(tlsInfo(mxName, version("TLSv1.1"))),
			"TLSv1.1 is below TLSv1.2"},
		{"primary MX below", "encrypt protocols=>=TLSv1.2",
			[]server{{"mx1.example.com", tlsInfo(mxName, version("TLSv1"))}, {"mx2.example.com", tlsInfo(mxName, version("TLSv1"))}},
			"mx1.example.com[192.0.2.1]: the server's highest TLS version TLSv1"},
		{"no version enabled", "encrypt protocols=>=TLSv1.3:<=TLSv1.2", one(tlsInfo(mxName, nil)),
			"protocols= leaves no TLS version"},
		{"server at the minimum", "encrypt protocols=>=TLSv1.2", one(tlsInfo(mxName, version("TLSv1.2"))), ""},
		{"server above the maximum negotiates down", "encrypt protocols=<=TLSv1.2", one(tlsInfo(mxName, nil)), ""},
		{"server in a gap negotiates down", "encrypt protocols=!TLSv1.1", one(tlsInfo(mxName, version("TLSv1.1"))), ""},

		// fingerprint match= (case 2): certificate or public-key SHA-256.
		{"wrong fingerprint", "fingerprint match=" + wrongFP, one(tlsInfo(mxName, nil)),
			"neither the certificate's SHA-256 fingerprint " + certFP},
		{"certificate fingerprint", "fingerprint match=" + certFP, one(tlsInfo(mxName, nil)), ""},
		{"public-key fingerprint, lower-case, no colons", "fingerprint match=" + strings.ToLower(strings.ReplaceAll(pkeyFP, ":", "")),
			one(tlsInfo(mxName, nil)), ""},
		{"second of several", "fingerprint match=" + wrongFP + "|" + certFP, one(tlsInfo(mxName, nil)), ""},
		{"second match attribute", "fingerprint match=" + wrongFP + " match=" + pkeyFP, one(tlsInfo(mxName, nil)), ""},
		{"every MX unpinned", "fingerprint match=" + certFP,
			[]server{{"mx1.example.com", tlsInfo(mxName, func(ti *probe.TLSInfo) {
				ti.Chain[0].SHA256, ti.Chain[0].PubkeySHA256 = wrongFP, wrongFP
			})}},
			"mx1.example.com[192.0.2.1]: neither"},
		{"another digest algorithm cannot be judged", "fingerprint match=" + strings.Repeat("AB:", 19) + "AB", one(tlsInfo(mxName, nil)), ""},

		// verify/secure match= (case 3).
		{"verify match=nexthop, certificate for the MX", "verify match=nexthop", one(tlsInfo(mxName, nil)),
			"certificate names [mx1.example.com] do not match example.com"},
		{"verify match=nexthop, certificate for the domain", "verify match=nexthop", one(tlsInfo([]string{"example.com"}, nil)), ""},
		{"secure match=nexthop, certificate for a subdomain", "secure match=nexthop", one(tlsInfo(mxName, nil)),
			"do not match example.com"},
		{"secure match=.domain", "secure match=.hoster.net", one(tlsInfo([]string{"mail.hoster.net"}, nil)), ""},
		{"verify literal name", "verify match=mail.hoster.net", one(tlsInfo([]string{"*.hoster.net"}, nil)), ""},
		{"verify match=, untrusted", "verify match=hostname:nexthop", one(tlsInfo(mxName, untrusted)),
			"not trusted: x509: certificate signed by unknown authority"},
		{"tafile: trust not the system roots'", "verify tafile=/etc/postfix/ta.pem", one(tlsInfo(mxName, untrusted)), ""},
		{"tafile: names still checked", "secure tafile=/etc/postfix/ta.pem match=nexthop", one(tlsInfo(mxName, untrusted)),
			"do not match example.com"},
		{"capped names, literal name", "verify match=z.hoster.net", one(tlsInfo(mxName, capped)), ""},
		{"capped names, nexthop", "secure match=nexthop", one(tlsInfo(mxName, capped)),
			"[a.hoster.net and 9000 more] do not match example.com"},

		// dane, dane-only (case 4).
		{"dane without STARTTLS falls back to may", "dane", one(nil), ""},
		{"dane-only without STARTTLS", "dane-only", one(nil), "mx1.example.com[192.0.2.1]: no STARTTLS offered"},
		{"dane-only with STARTTLS", "dane-only", one(tlsInfo(mxName, nil)), ""},

		// The level alone, as before.
		{"encrypt without STARTTLS", "encrypt", one(nil), "mx1.example.com[192.0.2.1]: no STARTTLS offered"},
		{"verify, wrong name", "verify", one(tlsInfo([]string{"example.com"}, nil)), "do not match mx1.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := store.ParsePolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			e := &store.Entry{Key: "example.com", Policy: p}
			fs := Judge(e, judgeResult(tc.servers...), time.Now())
			if tc.want == "" {
				if len(fs) != 0 {
					t.Fatalf("unexpected findings: %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].OK || fs[0].Kind != events.OutboundProbeFailed {
				t.Fatalf("findings %+v, want one failure", fs)
			}
			prefix := "mail to example.com is deferred: policy " + p.Text + " cannot be met: "
			if !strings.HasPrefix(fs[0].Reason, prefix) || !strings.Contains(fs[0].Reason, tc.want) {
				t.Errorf("reason %q\nwant %q … %q", fs[0].Reason, prefix, tc.want)
			}
		})
	}
}

// TestJudgeDane: the monitor does not probe dane entries (the prober can
// tell nothing about them), but does probe dane-only ones.
func TestJudgeDane(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   bool
	}{{"dane", false}, {"dane-only", true}, {"fingerprint match=" + certFP, true}, {"may", false}} {
		p, err := store.ParsePolicy(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		if got := probeable(&store.Entry{Key: "example.com", Policy: p, Testing: true}); got != tc.want {
			t.Errorf("probeable(%s) = %v, want %v", tc.policy, got, tc.want)
		}
	}
}

// TestMonitorJudgesAttributesOverLoopback: the reviewer's loopback cases,
// probed for real: a TLSv1-only MX under protocols=>=TLSv1.2, a pinned
// fingerprint that is wrong (and one pinning the public key, right), a
// verify match=nexthop against a certificate for the MX name, and dane
// with a plaintext MX.
func TestMonitorJudgesAttributesOverLoopback(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	old := ca.Issue(t, []string{"mx.old.example"}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	farm.Serve(t, "127.0.0.41", &tls.Config{Certificates: []tls.Certificate{old},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	pinned := ca.Issue(t, []string{"mx.pinned.example"}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	farm.Serve(t, "127.0.0.42", &tls.Config{Certificates: []tls.Certificate{pinned}})
	farm.PlainMX(t, "127.0.0.43")
	z.MX(t, "old.example", 10, "mx.old.example", "127.0.0.41")
	z.MX(t, "pinned.example", 10, "mx.pinned.example", "127.0.0.42")
	z.MX(t, "keypinned.example", 10, "mx.pinned.example", "127.0.0.42")
	z.MX(t, "matched.example", 10, "mx.pinned.example", "127.0.0.42")
	z.MX(t, "dane.example", 10, "mx.dane.example", "127.0.0.43")
	leaf, err := x509.ParseCertificate(pinned.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pk := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	s := buildStore(t, fmt.Sprintf(`
outbound:
  old.example: encrypt protocols=>=TLSv1.2
  pinned.example: fingerprint match=%s
  keypinned.example: fingerprint match=%x
  matched.example: verify match=nexthop
  dane.example: dane
`, wrongFP, pk))
	e := New(s, nil, events.NewRing(100), nil)
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid"})
	m := &Monitor{Engine: e, Probe: p.Probe, Logger: slog.New(slog.DiscardHandler)}
	got := map[string]string{}
	for _, f := range m.CheckAll(context.Background()) {
		got[f.Entry.Key] += f.Reason
	}
	want := map[string]string{
		"old.example":     "mx.old.example[127.0.0.41]:" + fmt.Sprint(farm.Port) + ": the server's highest TLS version TLSv1 is below TLSv1.2",
		"pinned.example":  "mx.pinned.example[127.0.0.42]:" + fmt.Sprint(farm.Port) + ": neither the certificate's SHA-256 fingerprint",
		"matched.example": "certificate names [mx.pinned.example] do not match matched.example",
	}
	for k, w := range want {
		if !strings.Contains(got[k], w) {
			t.Errorf("%s: finding %q, want one containing %q", k, got[k], w)
		}
	}
	for k, r := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected finding %q", k, r)
		}
	}
}
