package tests

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/exim"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// eximDeliveryTable is the daemon's table for TestEximDelivery: one domain
// per level and outcome (see the cases there).
const eximDeliveryTable = `outbound:
  encrypt.example: encrypt
  encrypt-tls.example: encrypt
  old-tls.example: encrypt protocols=>=TLSv1.3
  verify.example: verify
  untrusted.example: verify
  wrongname.example: verify
  secure.example: secure match=nexthop:dot-nexthop
  nexthop.example: secure match=nexthop:dot-nexthop
  none.example: none
  may.example: may
`

// eximDeliveryConfig is the examples' configuration with a manualroute
// router in place of dnslookup: DOMAIN goes to the host mx.DOMAIN (looked up
// by name in the instance's hosts file) on port, through
// TLSPOLICYD_TRANSPORT; a retry rule keeps deferred mail queued.
func eximDeliveryConfig(t *testing.T, hosts string, port int) exim.Config {
	main, acl, routers, transports := eximExamples(t)
	return exim.Config{
		Main: "domainlist local_domains = ourcorp.example\n" + main,
		ACL:  acl,
		Routers: routers + `
remote_mx:
  driver = manualroute
  domains = ! +local_domains
  route_list = * mx.$domain::` + itoa(port) + ` byname
  self = send
  transport = TLSPOLICYD_TRANSPORT
`,
		Transports: "remote_smtp:\n  driver = smtp\n\n" + transports,
		Retry:      "* * F,1h,10m",
		Hosts:      hosts,
	}
}

// TestEximDelivery delivers with a real Exim queue runner (exim -q), the
// routers and transports of examples/exim and the daemon's answers, to fake
// MX hosts on loopback: what each level does with an MX that lacks
// STARTTLS, has a certificate from a CA Exim trusts (TLSPOLICYD_CA), from
// one it does not trust, or for another name. A deferred message stays in
// the queue and its MX gets no MAIL; a delivered one arrives over TLS or in
// clear as the level says, through the level's transport. Two cases pin
// down what README.md says Exim does not apply: secure is checked against
// the MX host name, not the next hop (Postfix's match=nexthop would
// deliver), and protocols= is ignored (delivered over TLS 1.2).
func TestEximDelivery(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	d, _ := startDaemon(t, eximDeliveryTable, false)
	ca := harness.NewTestCA(t, "tlspolicyd exim trusted CA")
	other := harness.NewTestCA(t, "tlspolicyd exim untrusted CA")

	type mxKind int
	const (
		plain mxKind = iota // no STARTTLS
		withTLS
	)
	cases := []struct {
		name, domain string
		mx           mxKind
		cert         harness.CertFiles
		maxTLS       uint16
		transport    string
		// delivered: the message reaches the MX (over TLS when tls);
		// else it stays queued and the log has defer.
		delivered, tls bool
		log            string // in the log line of the delivery or deferral
	}{
		{name: "encrypt, no STARTTLS: deferred", domain: "encrypt.example", mx: plain, transport: "tlspolicyd_encrypt",
			log: "defer (-38) H=mx.encrypt.example [{ip}]: a TLS session is required, but the server did not offer TLS support"},
		{name: "encrypt, STARTTLS with an untrusted certificate: delivered over TLS", domain: "encrypt-tls.example", mx: withTLS,
			cert: other.Issue(t, "mx.encrypt-tls.example"), transport: "tlspolicyd_encrypt", delivered: true, tls: true, log: " CV=no "},
		{name: "encrypt protocols=>=TLSv1.3, MX with TLS 1.2 only: delivered (protocols= ignored)", domain: "old-tls.example", mx: withTLS,
			cert: other.Issue(t, "mx.old-tls.example"), maxTLS: tls.VersionTLS12, transport: "tlspolicyd_encrypt", delivered: true, tls: true, log: " X=TLS1.2:"},
		{name: "verify, trusted CA: delivered", domain: "verify.example", mx: withTLS,
			cert: ca.Issue(t, "mx.verify.example"), transport: "tlspolicyd_verify", delivered: true, tls: true, log: " CV=yes "},
		{name: "verify, untrusted CA: deferred", domain: "untrusted.example", mx: withTLS,
			cert: other.Issue(t, "mx.untrusted.example"), transport: "tlspolicyd_verify",
			log: "defer (-37) H=mx.untrusted.example [{ip}]: TLS session: (certificate verification failed): certificate invalid"},
		{name: "verify, trusted CA, another name: deferred", domain: "wrongname.example", mx: withTLS,
			cert: ca.Issue(t, "mx.elsewhere.example"), transport: "tlspolicyd_verify",
			log: "defer (-37) H=mx.wrongname.example [{ip}]: TLS session: (certificate verification failed)"},
		{name: "secure, certificate for the MX host: delivered", domain: "secure.example", mx: withTLS,
			cert: ca.Issue(t, "mx.secure.example"), transport: "tlspolicyd_secure", delivered: true, tls: true, log: " CV=yes "},
		{name: "secure, certificate for the next hop only: deferred (Exim checks the MX name)", domain: "nexthop.example", mx: withTLS,
			cert: ca.Issue(t, "nexthop.example"), transport: "tlspolicyd_secure",
			log: "defer (-37) H=mx.nexthop.example [{ip}]: TLS session: (certificate verification failed)"},
		{name: "none, MX offers STARTTLS: delivered in clear", domain: "none.example", mx: withTLS,
			cert: ca.Issue(t, "mx.none.example"), transport: "tlspolicyd_none", delivered: true},
		{name: "may, no STARTTLS: delivered in clear", domain: "may.example", mx: plain, transport: "tlspolicyd_may", delivered: true},
		{name: "unlisted, no STARTTLS: delivered in clear", domain: "unlisted.example", mx: plain, transport: "remote_smtp", delivered: true},
	}

	port := harness.FreePort(t, "127.0.0.1")
	mxs := make([]*harness.FakeMX, len(cases))
	var hosts strings.Builder
	for i, tc := range cases {
		ip := "127.0.0." + itoa(30+i)
		opts := []harness.FakeMXOption{harness.OnPort(port)}
		if tc.mx == withTLS {
			pair, err := tls.LoadX509KeyPair(tc.cert.Cert, tc.cert.Key)
			if err != nil {
				t.Fatal(err)
			}
			opts = append(opts, harness.WithTLS(&tls.Config{Certificates: []tls.Certificate{pair}, MaxVersion: tc.maxTLS}))
		}
		mxs[i] = harness.NewFakeMX(t, ip, opts...)
		hosts.WriteString(ip + " mx." + tc.domain + "\n")
	}

	x := exim.New(t, eximDeliveryConfig(t, hosts.String(), port))
	// The delivery process runs as the exim user: the CA file must be
	// readable to it, which t.TempDir's is not.
	caFile := filepath.Join(x.Dir, "ca.pem")
	b, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, caFile, string(b))
	defines := map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(d.Addr), "TLSPOLICYD_CA": caFile}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, tc := range cases {
		if err := x.Submit(ctx, defines, "sender@ourcorp.example", []string{"user@" + tc.domain}, tc.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.QueueRun(ctx, defines); err != nil {
		t.Fatal(err)
	}
	queued, err := x.Queued(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := x.MainLog()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("exim mainlog:\n%s\npaniclog:\n%s", log, x.PanicLog())
		}
	})

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mx, rcpt := mxs[i], "user@"+tc.domain
			expand := strings.NewReplacer("{ip}", mx.Host).Replace
			mark := "== "
			if tc.delivered {
				mark = "=> "
			}
			line := logLine(log, mark+rcpt+" R=remote_mx T="+tc.transport+" ")
			if line == "" {
				t.Fatalf("no %q line for %s via %s in the mainlog", mark, rcpt, tc.transport)
			}
			if !strings.Contains(line, expand(tc.log)) {
				t.Errorf("log line %q lacks %q", line, expand(tc.log))
			}
			isQueued := false
			for _, q := range queued {
				isQueued = isQueued || q == rcpt
			}
			got := mx.ReceivedFor(rcpt)
			if !tc.delivered {
				if !isQueued {
					t.Errorf("%s is not in the queue any more (exim -bp: %q)", rcpt, queued)
				}
				if m := mx.Mails(); len(m) != 0 {
					t.Errorf("the MX received MAIL: %+v", m)
				}
				return
			}
			if isQueued {
				t.Errorf("%s still queued after delivery", rcpt)
			}
			if len(got) != 1 || got[0].TLS != tc.tls {
				t.Errorf("the MX received %+v, want one message with TLS=%v", got, tc.tls)
			}
			if !tc.tls && strings.Contains(line, " X=") {
				t.Errorf("delivered in clear, but the log line says TLS: %q", line)
			}
		})
	}

	// With the daemon down, the lookup router defers before any transport:
	// mail to the unlisted domain (delivered in clear above) stays queued
	// and its MX sees no connection.
	t.Run("daemon down: deferred by the lookup router", func(t *testing.T) {
		unlisted := mxs[len(mxs)-1]
		before := unlisted.Sessions()
		down := map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(eximClosedAddr(t)), "TLSPOLICYD_CA": caFile}
		if err := x.Submit(ctx, down, "sender@ourcorp.example", []string{"again@unlisted.example"}, "daemon down"); err != nil {
			t.Fatal(err)
		}
		if err := x.QueueRun(ctx, down); err != nil {
			t.Fatal(err)
		}
		line := logLine(x.MainLog(), "== again@unlisted.example R=tlspolicyd_lookup defer (-1): expansion of")
		if line == "" || !strings.Contains(line, "Connection refused") {
			t.Errorf("no lookup-router deferral for again@unlisted.example (connection refused):\n%s", x.MainLog())
		}
		q, err := x.Queued(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(q, " "), "again@unlisted.example") {
			t.Errorf("again@unlisted.example not queued: %q", q)
		}
		if n := unlisted.Sessions(); n != before {
			t.Errorf("the MX got %d new connections, want none", n-before)
		}
	})
	if log := x.MainLog(); strings.Contains(log, " ** ") {
		t.Errorf("an address was bounced:\n%s", log)
	}
}

// logLine returns the first line of log containing s, or "".
func logLine(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return strings.TrimSuffix(line, "\n")
		}
	}
	return ""
}
