package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestOutboundDANE: Postfix 3.7 with examples/postfix, DNS on and
// smtp_dns_support_level = dnssec (the README's DANE settings), delivers
// to domains the table does not list as their DANE TLSA records require.
// Postfix's chrooted smtp client and the daemon ask one in-process DNS
// server that plays a validating resolver (AD on the signed names):
// Postfix on a private loopback address, port 53, named by the chroot's
// resolv.conf (a plain "nameserver" line: Postfix sets RES_TRUSTAD itself
// for DNSSEC lookups, so glibc keeps the AD bit without "options
// trust-ad"), the daemon on another port (--resolver). The machine's
// /etc/resolv.conf is neither read nor changed. The fake MX
// hosts listen on port 25 (the TLSA names are _25._tcp.<mx>), with
// certificates from a CA nobody trusts: only DANE can verify them.
//   - TLSA 3 1 1 matching the MX's key: the daemon answers dane-only,
//     Postfix delivers, "Verified TLS connection established"; so does a
//     domain without MX records, its own MX host (RFC 7672 §2.2.1);
//   - TLSA 3 1 1 of another key: deferred, dsn=4.7.5 "Server certificate
//     not verified", no MAIL;
//   - TLSA lookup SERVFAIL in a signed zone: the daemon answers TEMP,
//     Postfix defers (4.7.5 "client TLS configuration problem") without
//     connecting to the MX.
func TestOutboundDANE(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	res, pfDNS, ns := daneDNS(t)
	ca := harness.NewTestCA(t, "tlspolicyd DANE test CA, trusted by nobody")

	type daneCase struct {
		domain, ip string
		implicit   bool   // no MX record: the domain is its own MX host
		tlsa       string // "match", "other" or "servfail"
		reason     string // "" = delivered
	}
	host := func(tc daneCase) string {
		if tc.implicit {
			return tc.domain
		}
		return "mx." + tc.domain
	}
	cases := []daneCase{
		{domain: "dane-ok.test", ip: "127.0.25.1", tlsa: "match"},
		{domain: "dane-implicit.test", ip: "127.0.25.4", implicit: true, tlsa: "match"},
		{domain: "dane-wrong.test", ip: "127.0.25.2", tlsa: "other", reason: "Server certificate not verified"},
		{domain: "dane-servfail.test", ip: "127.0.25.3", tlsa: "servfail", reason: "client TLS configuration problem"},
	}
	other := ca.Issue(t, "someone-else.test")
	mxs := make([]*harness.FakeMX, len(cases))
	for i, tc := range cases {
		mx := host(tc)
		requireListen(t, tc.ip, 25)
		cert := ca.Issue(t, mx)
		mxs[i] = harness.NewTLSFakeMX(t, cert, tc.ip, harness.OnPort(25))
		publishTLSA(t, res, publishMX(t, res, tc.domain, 10, mx, tc.ip), tc.tlsa, cert, other)
	}

	d, pf := startDANE(t, res, ns, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qids := make([]string, len(cases))
	for i, tc := range cases {
		qids[i] = send(ctx, t, pf, "sender@origin.example", "user@"+tc.domain)
	}
	for i, tc := range cases {
		t.Run(tc.domain, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			rcpt, mx, qid := "user@"+tc.domain, mxs[i], qids[i]
			if tc.reason != "" {
				r, err := pf.WaitDeferred(ctx, qid, rcpt, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(r.DelayReason, tc.reason) {
					t.Errorf("delay_reason %q, want %q", r.DelayReason, tc.reason)
				}
				if st := statusLine(pf.Log(), qid, rcpt); !strings.Contains(st, "dsn=4.7.5") {
					t.Errorf("status line %q, want dsn=4.7.5", st)
				}
				if m := mx.Mails(); len(m) != 0 {
					t.Errorf("the MX received MAIL: %+v", m)
				}
				switch tc.tlsa {
				case "other": // Postfix compared the certificate with the TLSA records
					if mx.TLSHandshakes() == 0 {
						t.Errorf("no TLS handshake with the MX: Postfix did not get to compare its TLSA records")
					}
					want := "server certificate verification failed for mx." + tc.domain + "[" + tc.ip + "]:25: num=65:no matching DANE TLSA records"
					if !strings.Contains(pf.Log(), want) {
						t.Errorf("maillog lacks %q", want)
					}
				case "servfail": // nothing sent, not even a connection
					if n := mx.Sessions(); n != 0 {
						t.Errorf("the MX saw %d SMTP sessions, want none", n)
					}
				}
				return
			}
			if err := pf.WaitGone(ctx, qid, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			got := mx.ReceivedFor(rcpt)
			if len(got) != 1 || !got[0].TLS {
				t.Fatalf("MX received %+v, want one message over TLS", got)
			}
			want := "Verified TLS connection established to " + host(tc) + "[" + tc.ip + "]:25"
			if !strings.Contains(pf.Log(), want) {
				t.Errorf("maillog lacks %q", want)
			}
		})
	}

	// The answers came from the daemon's DANE step.
	want := map[string]string{"dane-ok.test": "dane-only", "dane-implicit.test": "dane-only", "dane-wrong.test": "dane-only"}
	for dom, policy := range want {
		if got := answer(t, query(t, pf.ConfigDir, d, "tls_policy", dom)); got != policy {
			t.Errorf("tls_policy %s = %q, want %q", dom, got, policy)
		}
	}
	r := query(t, pf.ConfigDir, d, "tls_policy", "dane-servfail.test")
	if r.Stdout != "" || !strings.Contains(r.Stderr, "socketmap server temporary error: dane-servfail.test") {
		t.Errorf("tls_policy dane-servfail.test: %s, want a temporary error (TEMP)", r)
	}
	// Postfix did its own DNSSEC lookups through the chroot's resolver:
	// MX and address, then TLSA unless the policy lookup failed; every
	// answer was authenticated (after an unauthenticated one Postfix
	// probes the resolver, dnssec_probe = ns:., and warns).
	for _, tc := range cases {
		mx := host(tc)
		for _, q := range [][2]string{{tc.domain, "MX"}, {mx, "A"}, {"_25._tcp." + mx, "TLSA"}} {
			want := q[1] != "TLSA" || tc.tlsa != "servfail"
			if got := pfDNS.asked(q[0], q[1]); got != want {
				t.Errorf("Postfix asked %s %s through the chroot's resolver: %v, want %v", q[0], q[1], got, want)
			}
		}
	}
	if log := pf.Log(); strings.Contains(log, "DNSSEC validation may be unavailable") {
		t.Errorf("Postfix's DNSSEC probe through the chroot's resolver got no AD bit:\n%s", grepLines(log, "DNSSEC"))
	}
}

// TestOutboundDANEPostfixNotValidating: the daemon's resolver validates
// but the one in Postfix's chroot does not (its answers lack the AD bit,
// as a non-validating resolver's do). The daemon's dane-only answer is not
// weakened: Postfix defers, dsn=4.7.5 "non DNSSEC destination", and never
// connects to the MX, although the TLSA record would match; it logs
// "DNSSEC validation may be unavailable".
func TestOutboundDANEPostfixNotValidating(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	res := sourcetest.NewResolver(t)
	pfDNS := &queryLog{next: noAD{res}, seen: map[string]int{}}
	ns := serveDNSOnPort53(t, pfDNS)
	const domain, mxName, ip = "dane-novalidate.test", "mx.dane-novalidate.test", "127.0.25.5"
	requireListen(t, ip, 25)
	cert := harness.NewTestCA(t, "tlspolicyd DANE test CA, trusted by nobody").Issue(t, mxName)
	mx := harness.NewTLSFakeMX(t, cert, ip, harness.OnPort(25))
	res.Add(t, publishMX(t, res, domain, 10, mxName, ip)+" 300 IN TLSA 3 1 1 "+spkiSHA256(cert))

	d, pf := startDANE(t, res, ns, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	rcpt := "user@" + domain
	qid := send(ctx, t, pf, "sender@origin.example", rcpt)
	r, err := pf.WaitDeferred(ctx, qid, rcpt, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.DelayReason, "non DNSSEC destination") {
		t.Errorf("delay_reason %q, want %q", r.DelayReason, "non DNSSEC destination")
	}
	if st := statusLine(pf.Log(), qid, rcpt); !strings.Contains(st, "dsn=4.7.5") {
		t.Errorf("status line %q, want dsn=4.7.5", st)
	}
	if n := mx.Sessions(); n != 0 {
		t.Errorf("the MX saw %d SMTP sessions, want none", n)
	}
	if log := pf.Log(); !strings.Contains(log, "warning: DNSSEC validation may be unavailable") {
		t.Errorf("maillog lacks Postfix's warning about its resolver:\n%s", grepLines(log, "DNSSEC"))
	}
	if !pfDNS.asked(domain, "MX") {
		t.Errorf("Postfix never asked the chroot's resolver for %s MX", domain)
	}
	if got := answer(t, query(t, pf.ConfigDir, d, "tls_policy", domain)); got != "dane-only" {
		t.Errorf("tls_policy %s = %q, want dane-only", domain, got)
	}
}

// daneDNS starts the validating resolver of a DANE test: the daemon asks
// res at its own address (res.Addr), Postfix's chrooted smtp client asks
// it on port 53 of ns, its queries logged apart in pfDNS.
func daneDNS(t *testing.T) (res *sourcetest.Resolver, pfDNS *queryLog, ns string) {
	t.Helper()
	res = sourcetest.NewResolver(t)
	pfDNS = &queryLog{next: res, seen: map[string]int{}}
	return res, pfDNS, serveDNSOnPort53(t, pfDNS)
}

// startDANE starts the daemon with DANE on, asking res at its own
// address, and a Postfix instance with examples/postfix and the README's
// DANE settings (extra overrides them) whose chrooted smtp client asks the
// DNS server at ns (port 53) and connects to port 25.
func startDANE(t *testing.T, res *sourcetest.Resolver, ns string, extra map[string]string) (*harness.Daemon, *harness.Postfix) {
	t.Helper()
	table := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, table, "outbound:\n  listed.example: may\n")
	d := harness.StartDaemon(t, daemonBinary(t), table, "--resolver", res.Addr, "--dane=true")
	settings := map[string]string{
		"smtp_dns_support_level": "dnssec",
		"smtp_host_lookup":       "dns",
	}
	maps.Copy(settings, extra)
	pf := harness.NewPostfix(t, harness.PostfixConfig{
		Socketmap:   d.Addr,
		MXPort:      25,
		Main:        settings,
		ChrootFiles: map[string]string{"etc/resolv.conf": "nameserver " + ns + "\n"},
	})
	return d, pf
}

// publishMX signs domain and publishes mx (domain itself: no MX record)
// with preference pref at ip; it returns the owner name of mx's TLSA
// records.
func publishMX(t *testing.T, res *sourcetest.Resolver, domain string, pref int, mx, ip string) string {
	t.Helper()
	res.Sign(domain)
	if mx != domain {
		res.Add(t, domain+". 300 IN MX "+itoa(pref)+" "+mx+".")
	}
	res.Add(t, mx+". 300 IN A "+ip)
	return "_25._tcp." + mx + "."
}

// publishTLSA publishes at owner what kind says: "match", a TLSA 3 1 1
// record of cert's key; "other", one of other's key; "servfail", a
// lookup that fails; "" nothing (in a signed zone: authenticated denial).
func publishTLSA(t *testing.T, res *sourcetest.Resolver, owner, kind string, cert, other harness.CertFiles) {
	t.Helper()
	switch kind {
	case "match":
		res.Add(t, owner+" 300 IN TLSA 3 1 1 "+spkiSHA256(cert))
	case "other":
		res.Add(t, owner+" 300 IN TLSA 3 1 1 "+spkiSHA256(other))
	case "servfail":
		res.Fail(owner, dns.TypeTLSA, dns.RcodeServerFailure)
	case "":
	default:
		t.Fatalf("publishTLSA: unknown kind %q", kind)
	}
}

// noAD passes queries to next and clears the AD bit of its answers, as a
// resolver that does not validate answers.
type noAD struct{ next dns.Handler }

func (h noAD) ServeDNS(w dns.ResponseWriter, req *dns.Msg) { h.next.ServeDNS(noADWriter{w}, req) }

type noADWriter struct{ dns.ResponseWriter }

func (w noADWriter) WriteMsg(m *dns.Msg) error {
	m.AuthenticatedData = false
	return w.ResponseWriter.WriteMsg(m)
}

// spkiSHA256 is the data of a TLSA 3 1 1 record for cert: the SHA-256 of
// its SubjectPublicKeyInfo in hex.
func spkiSHA256(cert harness.CertFiles) string {
	sum := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// queryLog is a dns.Handler that records which names and types were
// asked ("name TYPE") before passing each query to next.
type queryLog struct {
	next dns.Handler
	mu   sync.Mutex
	seen map[string]int
}

func (h *queryLog) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) == 1 {
		q := req.Question[0]
		h.mu.Lock()
		h.seen[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]++
		h.mu.Unlock()
	}
	h.next.ServeDNS(w, req)
}

// asked reports whether name and type (e.g. "TLSA") were asked.
func (h *queryLog) asked(name, qtype string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[dns.Fqdn(name)+" "+qtype] > 0
}

// dnsPort53Hosts are the loopback addresses tried for the DNS server a
// chrooted Postfix reaches through resolv.conf (which has no port: 53).
// 127.0.0.53 is systemd-resolved's; these are private to the tests.
var dnsPort53Hosts = []string{"127.53.83.1", "127.53.83.2", "127.53.83.3", "127.53.83.4", "127.53.84.1"}

// serveDNSOnPort53 serves h over UDP and TCP on port 53 of the first free
// address of dnsPort53Hosts (tests running in parallel get one each) until the end of the test and returns that
// address. Without one (not root, all taken) it skips (e2e.Skipf: fails
// in CI).
func serveDNSOnPort53(t *testing.T, h dns.Handler) string {
	t.Helper()
	var errs []string
	for _, ip := range dnsPort53Hosts {
		addr := net.JoinHostPort(ip, "53")
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			_ = pc.Close()
			errs = append(errs, err.Error())
			continue
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go func() { _ = srv.ActivateAndServe() }()
			<-started
			t.Cleanup(func() { _ = srv.Shutdown() })
		}
		return ip
	}
	e2e.Skipf(t, "cannot serve DNS on port 53 of a private loopback address: %s", strings.Join(errs, "; "))
	return ""
}

// requireListen skips t (e2e.Skipf: fails in CI) when ip:port cannot be
// listened on, e.g. because an MTA on the machine holds *:25.
func requireListen(t *testing.T, ip string, port int) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, itoa(port)))
	if err != nil {
		e2e.Skipf(t, "a fake MX needs %s:%d (the TLSA names are _%d._tcp.<mx>): %v", ip, port, port, err)
		return
	}
	_ = l.Close()
}
