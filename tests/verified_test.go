package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestOutboundVerifiedDelivery shows that the daemon's strong answers
// deliver, not only defer: a Postfix instance that trusts a test CA
// (smtp_tls_CAfile) sends through examples/postfix to fake MX hosts with
// certificates from that CA, under verify, secure
// match=nexthop:dot-nexthop (the next hop's own name, and a name below
// it), a pinned fingerprint, a .parent entry, a recipients: entry and a
// senders: entry. Each message reaches its MX over TLS, and the maillog
// says the connection was "Verified" (or "Trusted" for encrypt). Two
// controls use the same CA, so an answer too strict to ever deliver would
// be caught: secure with a certificate for another name, and a fingerprint
// that is not the MX's, both stay deferred.
func TestOutboundVerifiedDelivery(t *testing.T) {
	harness.RequirePostfix(t)
	t.Parallel()
	ca := harness.NewTestCA(t, "tlspolicyd trusted CA")
	other := harness.NewTestCA(t, "tlspolicyd untrusted CA") // not in smtp_tls_CAfile
	pinned := other.Issue(t, "pinned.example")
	badpin := other.Issue(t, "badpin.example")

	d, _ := startDaemon(t, `outbound:
  verify.example: verify
  secure.example: secure match=nexthop:dot-nexthop
  dot.example: secure match=nexthop:dot-nexthop
  wrongname.example: secure match=nexthop:dot-nexthop
  pinned.example: fingerprint match=`+pinned.Fingerprint()+`
  badpin.example: fingerprint match=`+pinned.Fingerprint()+`
  .parent.example: verify
  trusted.example: encrypt
recipients:
  user@rcpt.example: verify
senders:
  secure-sender@origin.example: secure
`, false)

	type mxCase struct {
		name string
		rcpt string
		from string // "" = sender@origin.example
		cert harness.CertFiles
		// established is the maillog's TLS line kind: "Verified",
		// "Trusted"; "" = the message must stay deferred.
		established string
	}
	cases := []mxCase{
		{name: "verify", rcpt: "user@verify.example", cert: ca.Issue(t, "verify.example"), established: "Verified"},
		{name: "secure, certificate for the next hop", rcpt: "user@secure.example", cert: ca.Issue(t, "secure.example"), established: "Verified"},
		{name: "secure, certificate for a name below the next hop (dot-nexthop)", rcpt: "user@dot.example", cert: ca.Issue(t, "mx.dot.example"), established: "Verified"},
		{name: "fingerprint pinned, certificate from a CA Postfix does not trust", rcpt: "user@pinned.example", cert: pinned, established: "Verified"},
		{name: "verify from a .parent entry", rcpt: "user@sub.parent.example", cert: ca.Issue(t, "sub.parent.example"), established: "Verified"},
		{name: "encrypt, trusted CA", rcpt: "user@trusted.example", cert: ca.Issue(t, "trusted.example"), established: "Trusted"},
		{name: "verify for a recipients: entry", rcpt: "user@rcpt.example", cert: ca.Issue(t, "rcpt.example"), established: "Verified"},
		{name: "secure for a senders: entry", rcpt: "user@sender-dest.example", from: "secure-sender@origin.example",
			cert: ca.Issue(t, "sender-dest.example"), established: "Verified"},
		// Controls: the same CA, the wrong name; a pin that is not the MX's.
		{name: "control: secure, certificate for another name", rcpt: "user@wrongname.example", cert: ca.Issue(t, "elsewhere.example")},
		{name: "control: fingerprint of another certificate", rcpt: "user@badpin.example", cert: badpin},
	}

	// One instance, one port (smtp_tcp_port): each MX listens on its own
	// loopback address, and the chroot's hosts file routes its domain there.
	port := harness.FreePort(t, "127.0.0.1")
	mxs := make([]*harness.FakeMX, len(cases))
	hosts := map[string]string{}
	for i, tc := range cases {
		mxs[i] = harness.NewTLSFakeMX(t, tc.cert, "127.0.0."+itoa(10+i), harness.OnPort(port))
		_, domain, _ := strings.Cut(tc.rcpt, "@")
		hosts[domain] = mxs[i].Host
	}
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: port, Hosts: hosts, CAFile: ca.File})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qids := make([]string, len(cases))
	for i, tc := range cases {
		from := tc.from
		if from == "" {
			from = "sender@origin.example"
		}
		qids[i] = send(ctx, t, pf, from, tc.rcpt)
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			mx, qid := mxs[i], qids[i]
			_, domain, _ := strings.Cut(tc.rcpt, "@")
			relay := domain + "[" + mx.Host + "]:" + itoa(port)
			if tc.established == "" {
				r, err := pf.WaitDeferred(ctx, qid, tc.rcpt, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if r.DelayReason != "Server certificate not verified" {
					t.Errorf("delay_reason %q, want %q", r.DelayReason, "Server certificate not verified")
				}
				if mx.TLSHandshakes() == 0 {
					t.Errorf("no TLS handshake with %s: the certificate was never checked", relay)
				}
				if m := mx.Mails(); len(m) != 0 {
					t.Errorf("the MX received MAIL: %+v", m)
				}
				return
			}
			if err := pf.WaitGone(ctx, qid, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			got := mx.ReceivedFor(tc.rcpt)
			if len(got) != 1 || !got[0].TLS {
				t.Fatalf("MX %s received %+v for %s, want one message over TLS", relay, got, tc.rcpt)
			}
			var status string
			if !harness.WaitFor(ctx, 10*time.Second, func() bool {
				status = statusLine(pf.Log(), qid, tc.rcpt)
				return status != ""
			}) {
				t.Fatalf("no status line for %s %s in the maillog", qid, tc.rcpt)
			}
			if !strings.Contains(status, " relay="+relay+", ") || !strings.Contains(status, ", dsn=2.0.0, status=sent (") {
				t.Errorf("status line %q, want relay=%s and status=sent", status, relay)
			}
			want := tc.established + " TLS connection established to " + relay + ": "
			if !strings.Contains(pf.Log(), want) {
				t.Errorf("maillog lacks %q", want)
			}
		})
	}
}
