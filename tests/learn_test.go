package tests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestProbeDrivenPolicies runs the daemon's prober against a DNS server
// that answers (miekg/dns on loopback) and fake MX hosts, end to end
// through real Postfix:
//   - learn: enforce: an unlisted domain whose MX offers STARTTLS is
//     learned as "encrypt" after the probe its first lookup schedules;
//     when STARTTLS is then stripped on Postfix's path to the MX (its
//     route leads to an MX without STARTTLS), the mail is held for TLS.
//     A domain whose MX lacks STARTTLS is not learned and is delivered.
//   - testing: true: the entry answers as if absent, so mail is delivered
//     in clear, while the lookup's kick makes the prober check the MX and
//     report that enforcing it would defer mail.
func TestProbeDrivenPolicies(t *testing.T) {
	harness.RequirePostfix(t)
	t.Parallel()
	zone := probetest.NewZone(t)
	plainMX := harness.NewFakeMX(t, "127.0.0.2")
	ca := harness.NewTestCA(t, "tlspolicyd learn CA")
	tlsMX := harness.NewTLSFakeMX(t, ca.Issue(t, "mx.learned.example"), "127.0.0.3", harness.OnPort(plainMX.Port))
	zone.MX(t, "learned.example", 10, "mx.learned.example", tlsMX.Host)
	zone.MX(t, "plain.example", 10, "mx.plain.example", plainMX.Host)
	zone.MX(t, "lawfirm.example", 10, "mx.lawfirm.example", plainMX.Host)

	table := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, table, `defaults:
  learn: enforce
outbound:
  lawfirm.example:
    policy: encrypt
    testing: true
`)
	d := harness.StartDaemon(t, daemonBinary(t), table, "--resolver", zone.Addr, "--probe-port", itoa(plainMX.Port),
		"--allow-private", "--probe-timeout", "5s", "--helo", "probe.tlspolicyd-test.invalid",
		"--dane=false", "--mta-sts=false")
	conf := harness.PostmapConfig(t)

	// The first lookups answer NOTFOUND and schedule probes; once the
	// probe of learned.example is in, it answers encrypt.
	for _, key := range []string{"learned.example", "plain.example"} {
		if got := answer(t, query(t, conf, d, "tls_policy", key)); got != "" {
			t.Fatalf("first lookup of %s = %q, want a miss (lookups never wait for a probe)", key, got)
		}
	}
	var got string
	if !harness.WaitFor(context.Background(), 20*time.Second, func() bool {
		got = answer(t, query(t, conf, d, "tls_policy", "learned.example"))
		return got == "encrypt"
	}) {
		t.Fatalf("learned.example still answers %q 20 s after its first lookup, want the learned encrypt\n%s", got, d.Stderr())
	}
	if tlsMX.TLSHandshakes() == 0 {
		t.Error("the prober completed no TLS handshake with learned.example's MX")
	}
	if m := tlsMX.Mails(); len(m) != 0 {
		t.Errorf("the prober sent MAIL: %+v", m)
	}
	// plain.example's probe: its MX got a session, and it stays unlearned.
	if !harness.WaitFor(context.Background(), 20*time.Second, func() bool { return plainMX.Sessions() > 0 }) {
		t.Fatal("the prober never connected to plain.example's MX")
	}
	if got := answer(t, query(t, conf, d, "tls_policy", "plain.example")); got != "" {
		t.Errorf("plain.example (no STARTTLS) answers %q, want a miss", got)
	}

	// Postfix's routes: learned.example leads to the MX without STARTTLS
	// (stripped on the way), the others to their MX.
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: plainMX.Port,
		Hosts: map[string]string{"learned.example": plainMX.Host, "plain.example": plainMX.Host, "lawfirm.example": plainMX.Host}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	held := send(ctx, t, pf, "sender@origin.example", "user@learned.example")
	plain := send(ctx, t, pf, "sender@origin.example", "user@plain.example")
	pilot := send(ctx, t, pf, "sender@origin.example", "user@lawfirm.example")

	r, err := pf.WaitDeferred(ctx, held, "user@learned.example", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "TLS is required, but was not offered by host learned.example[127.0.0.2]"; !strings.Contains(r.DelayReason, want) {
		t.Errorf("learned.example: delay_reason %q, want %q", r.DelayReason, want)
	}
	for _, q := range []struct{ qid, rcpt string }{{plain, "user@plain.example"}, {pilot, "user@lawfirm.example"}} {
		if err := pf.WaitGone(ctx, q.qid, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := plainMX.ReceivedFor(q.rcpt); len(got) != 1 || got[0].TLS {
			t.Errorf("%s: the MX received %+v, want one message in clear", q.rcpt, got)
		}
	}
	if got := plainMX.ReceivedFor("user@learned.example"); len(got) != 0 {
		t.Errorf("learned.example's mail reached the MX without STARTTLS: %+v", got)
	}

	// The testing entry's lookup kicked a probe: it reports what enforcing
	// would do.
	const would = "enforcing encrypt for lawfirm.example would defer mail"
	if !harness.WaitFor(ctx, 20*time.Second, func() bool { return strings.Contains(d.Stderr(), would) }) {
		t.Fatalf("the daemon never reported %q\n%s", would, d.Stderr())
	}
	if !strings.Contains(d.Stderr(), "no STARTTLS offered") {
		t.Errorf("the report does not say why (no STARTTLS offered)")
	}
}
