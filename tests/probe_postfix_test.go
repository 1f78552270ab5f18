package tests

import (
	"context"
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestProbeRealPostfix probes a real Postfix smtpd as the MX: an
// in-process DNS zone gives tls.tlspolicyd-test.invalid an MX host whose
// certificate (from a test CA) names it, served by Postfix with STARTTLS;
// notls.tlspolicyd-test.invalid points at a Postfix listener without TLS.
// The prober must see what Postfix's smtp client would: STARTTLS, TLS 1.3,
// verify and secure passing with the CA trusted; and no STARTTLS on the
// other listener, so encrypt would defer.
func TestProbeRealPostfix(t *testing.T) {
	harness.RequirePostfix(t)
	ca := harness.NewTestCA(t, "tlspolicyd probe CA")
	const mxName = "mx.tls.tlspolicyd-test.invalid"
	server := ca.Issue(t, mxName)

	// Both listeners share one port number on two loopback addresses, as
	// the prober connects to every MX on one configured port.
	port := harness.FreePort(t, "127.0.0.1")
	tlsAddr := "127.0.0.1:" + itoa(port)
	plainAddr := "127.0.0.2:" + itoa(port)
	main := harness.InboundMain("127.0.0.1:1", server) // RCPT never comes: the prober stops at QUIT
	// Each listener logs under its own name, so its sessions can be told
	// apart in the maillog.
	const tlsLog, plainLog = "postfix/probe-tls/smtpd[", "postfix/probe-plain/smtpd["
	pf := harness.NewPostfix(t, harness.PostfixConfig{
		Main: main,
		Master: []string{
			harness.SmtpdListener(tlsAddr, map[string]string{"syslog_name": "postfix/probe-tls"}),
			harness.SmtpdListener(plainAddr, map[string]string{"smtpd_tls_security_level": "none", "syslog_name": "postfix/probe-plain"}),
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, a := range []string{tlsAddr, plainAddr} {
		if err := harness.WaitListening(ctx, a, 10*time.Second); err != nil {
			t.Fatalf("postfix smtpd %s: %v\n%s", a, err, pf.Log())
		}
	}

	z := probetest.NewZone(t)
	z.MX(t, "tls.tlspolicyd-test.invalid", 10, mxName, "127.0.0.1")
	z.MX(t, "notls.tlspolicyd-test.invalid", 10, "mx.notls.tlspolicyd-test.invalid", "127.0.0.2")
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("test CA PEM did not parse")
	}
	p := probe.New(probe.Config{Resolver: z.Addr, Port: port, Timeout: 10 * time.Second,
		AllowPrivate: true, Roots: roots, HELO: "prober.tlspolicyd-test.invalid"})

	r, err := p.Probe(ctx, "tls.tlspolicyd-test.invalid")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != probe.StatusOK || len(r.MX) != 1 || len(r.MX[0].Addrs) != 1 {
		t.Fatalf("probe of Postfix with STARTTLS: %+v", r)
	}
	a := r.MX[0].Addrs[0]
	if !a.STARTTLS || a.TLS == nil || a.TLS.Version != "TLSv1.3" || !strings.Contains(a.Banner, "ESMTP Postfix") {
		t.Errorf("address result: %+v tls %+v", a, a.TLS)
	}
	for _, l := range probe.Levels() {
		if !r.Levels[l].OK {
			t.Errorf("level %s should deliver to Postfix with a CA-issued certificate for %s: %s", l, mxName, r.Levels[l].Reason)
		}
	}

	r, err = p.Probe(ctx, "notls.tlspolicyd-test.invalid")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != probe.StatusNoSTARTTLS || !r.Levels[probe.LevelMay].OK || r.Levels[probe.LevelEncrypt].OK {
		t.Fatalf("probe of Postfix without TLS: status %s levels %+v", r.Status, r.Levels)
	}
	if !strings.Contains(r.Levels[probe.LevelEncrypt].Reason, "mx.notls.tlspolicyd-test.invalid[127.0.0.2]") {
		t.Errorf("reason should name the MX: %q", r.Levels[probe.LevelEncrypt].Reason)
	}

	// The prober never sent MAIL or RCPT. Postfix logs no from=<…> for a
	// MAIL without a complete transaction, but smtpd's "disconnect from"
	// line counts every command of the session ("ehlo=2 starttls=1 quit=1
	// commands=4"; with MAIL also "mail=1"). postlogd writes
	// asynchronously: wait until every session each listener logged a
	// "connect from" for has its "disconnect from" line, and one of them
	// sent EHLO (the prober's; WaitListening's bare connections sent no
	// command).
	ends := map[string][]string{}
	if !harness.WaitFor(ctx, 10*time.Second, func() bool {
		for _, tag := range []string{tlsLog, plainLog} {
			var complete bool
			ends[tag], complete = smtpdSessions(pf.Log(), tag)
			if !complete || !slices.ContainsFunc(ends[tag], func(l string) bool { return strings.Contains(l, " ehlo=") }) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the prober's sessions never ended in the maillog: %q\n%s", ends, pf.Log())
	}
	if !slices.ContainsFunc(ends[tlsLog], func(l string) bool { return strings.Contains(l, " starttls=1 ") }) {
		t.Errorf("no session with the TLS listener used STARTTLS: %q", ends[tlsLog])
	}
	for _, l := range slices.Concat(ends[tlsLog], ends[plainLog]) {
		if strings.Contains(l, " mail=") || strings.Contains(l, " rcpt=") {
			t.Errorf("the prober must never send MAIL or RCPT: %s", l)
		}
	}
}

// smtpdSessions returns the "disconnect from" lines of the smtpd logging
// as tag ("postfix/NAME/smtpd[") and whether every session it logged a
// "connect from" for has ended.
func smtpdSessions(log, tag string) (ends []string, complete bool) {
	starts := 0
	for line := range strings.Lines(log) {
		_, msg, ok := strings.Cut(line, " "+tag)
		if !ok {
			continue
		}
		switch {
		case strings.Contains(msg, "]: connect from "):
			starts++
		case strings.Contains(msg, "]: disconnect from "):
			ends = append(ends, strings.TrimSuffix(line, "\n"))
		}
	}
	return ends, starts == len(ends)
}
