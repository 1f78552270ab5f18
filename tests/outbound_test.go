package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// outboundTable enforces TLS for bank.example and its subdomains, for
// one address at partner.example, and for all mail from one local sender.
const outboundTable = `outbound:
  bank.example: encrypt
  .bank.example: encrypt
recipients:
  cfo@partner.example: encrypt
senders:
  compliance@origin.example: encrypt
`

// newOutbound starts the daemon on table, a fake MX without STARTTLS on
// 127.0.0.2 and a Postfix instance using the daemon for
// smtp_tls_policy_maps and transport_maps, with hosts routed to the MX.
// It returns the daemon, its table file, the MX and the instance.
func newOutbound(t *testing.T, table string, hosts ...string) (*harness.Daemon, string, *harness.FakeMX, *harness.Postfix) {
	t.Helper()
	d, path := startDaemon(t, table, false)
	mx := harness.NewFakeMX(t, "127.0.0.2")
	routes := map[string]string{}
	for _, h := range hosts {
		routes[h] = mx.Host
	}
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: mx.Port, Hosts: routes})
	return d, path, mx, pf
}

// untrustedMX starts a fake MX on host offering STARTTLS with a
// certificate for name issued by ca, a CA Postfix's smtp client does not
// trust (the instances set no smtp_tls_CAfile or smtp_tls_CApath).
func untrustedMX(t *testing.T, ca *harness.TestCA, host, name string, opts ...harness.FakeMXOption) *harness.FakeMX {
	t.Helper()
	return harness.NewTLSFakeMX(t, ca.Issue(t, name), host, opts...)
}

// send submits a message and fails t if that fails.
func send(ctx context.Context, t *testing.T, pf *harness.Postfix, from string, rcpts ...string) string {
	t.Helper()
	qid, err := pf.Send(ctx, from, rcpts, "to "+strings.Join(rcpts, ", "))
	if err != nil {
		t.Fatal(err)
	}
	return qid
}

// notOffered is Postfix's deferral reason when the policy requires TLS and
// the MX does not offer STARTTLS (docs/postfix.md, "Outbound: what Postfix
// does with the answer"; dsn=4.7.4).
func notOffered(host string) string {
	return "TLS is required, but was not offered by host " + host + "[127.0.0.2]"
}

// TestOutboundEnforcement sends mail through a real Postfix configured
// with examples/postfix (main.cf and master.cf) whose TLS policy comes
// from the daemon, to a fake MX that does not offer STARTTLS: what the
// table enforces stays deferred and never reaches the MX, the rest is
// delivered. Mail from the sender of the senders: section leaves through
// the example's tlspolicyd-encrypt transport (tls_sender_transport): to an
// unlisted domain it is deferred by that MX, and delivered over TLS to a
// second MX that offers STARTTLS.
func TestOutboundEnforcement(t *testing.T) {
	harness.RequirePostfix(t)
	_, _, mx, pf := newOutbound(t, outboundTable, "bank.example", "sub.bank.example", "open.example", "partner.example")
	// The instance connects to one port (smtp_tcp_port): the MX with
	// STARTTLS listens on the same one on 127.0.0.3. Encrypt does not
	// verify, so a certificate from a CA Postfix does not trust will do.
	tlsMX := untrustedMX(t, harness.NewTestCA(t, "tlspolicyd outbound CA"), "127.0.0.3", "tls.example", harness.OnPort(mx.Port))
	if err := pf.AddHost("tls.example", tlsMX.Host); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const from, enforcedFrom = "sender@origin.example", "compliance@origin.example"
	bank := send(ctx, t, pf, from, "alice@bank.example")
	sub := send(ctx, t, pf, from, "bob@sub.bank.example")
	open := send(ctx, t, pf, from, "carol@open.example")
	split := send(ctx, t, pf, from, "cfo@partner.example", "other@partner.example")
	senderPlain := send(ctx, t, pf, enforcedFrom, "dan@open.example")
	senderTLS := send(ctx, t, pf, enforcedFrom, "erin@tls.example")

	deferrals := []struct {
		name, qid, rcpt, host string
	}{
		{"enforced domain", bank, "alice@bank.example", "bank.example"},
		{"subdomain via .parent entry", sub, "bob@sub.bank.example", "sub.bank.example"},
		{"enforced recipient", split, "cfo@partner.example", "partner.example"},
		{"enforced sender to an unlisted domain", senderPlain, "dan@open.example", "open.example"},
	}
	for _, tc := range deferrals {
		t.Run(tc.name, func(t *testing.T) {
			r, err := pf.WaitDeferred(ctx, tc.qid, tc.rcpt, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(r.DelayReason, notOffered(tc.host)) {
				t.Errorf("%s: delay_reason %q, want %q", tc.rcpt, r.DelayReason, notOffered(tc.host))
			}
			if got := mx.ReceivedFor(tc.rcpt); len(got) != 0 {
				t.Errorf("the MX without STARTTLS received mail for %s: %+v", tc.rcpt, got)
			}
		})
	}

	t.Run("unlisted domain delivered", func(t *testing.T) {
		if err := pf.WaitGone(ctx, open, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		got := mx.ReceivedFor("carol@open.example")
		if len(got) != 1 {
			t.Fatalf("MX received %d messages for carol@open.example, want 1", len(got))
		}
		if got[0].From != from {
			t.Errorf("MAIL FROM %q, want %s", got[0].From, from)
		}
	})

	t.Run("enforced sender delivered over STARTTLS", func(t *testing.T) {
		if err := pf.WaitGone(ctx, senderTLS, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		got := tlsMX.ReceivedFor("erin@tls.example")
		if len(got) != 1 || !got[0].TLS || got[0].From != enforcedFrom {
			t.Fatalf("MX with STARTTLS received %+v for erin@tls.example, want one message from %s over TLS", got, enforcedFrom)
		}
	})

	t.Run("other recipient of the same domain delivered", func(t *testing.T) {
		if !harness.WaitFor(ctx, 20*time.Second, func() bool { return len(mx.ReceivedFor("other@partner.example")) > 0 }) {
			t.Fatal("other@partner.example never reached the MX")
		}
		for _, m := range mx.ReceivedFor("other@partner.example") {
			if len(m.To) != 1 {
				t.Errorf("delivery to other@partner.example carried recipients %q, want only it", m.To)
			}
		}
		e, ok, err := pf.Entry(ctx, split)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || len(e.Recipients) != 1 || e.Recipients[0].Address != "cfo@partner.example" {
			t.Errorf("queue entry %s = %+v (present %v), want only cfo@partner.example left", split, e, ok)
		}
	})

	// A retry asks the daemon again (Postfix caches a policy for one
	// delivery only) and is refused again.
	t.Run("retry still deferred", func(t *testing.T) {
		before := mx.Sessions()
		if err := pf.Retry(ctx, bank); err != nil {
			t.Fatal(err)
		}
		if !harness.WaitFor(ctx, 20*time.Second, func() bool { return mx.Sessions() > before }) {
			t.Fatalf("postqueue -i %s: no new connection to the MX", bank)
		}
		r, err := pf.WaitDeferred(ctx, bank, "alice@bank.example", 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.DelayReason, notOffered("bank.example")) {
			t.Errorf("after retry: delay_reason %q", r.DelayReason)
		}
		if got := mx.ReceivedFor("alice@bank.example"); len(got) != 0 {
			t.Errorf("retry delivered to alice@bank.example: %+v", got)
		}
	})
}
