package tests

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// faultRules are the daemon's injected faults (internal/fault, build tag
// harness.FaultsTag): for each kind, one tls_policy next hop, one
// tls_transport recipient and one policy delegation recipient.
const faultRules = "tls_policy:perror.example=error;tls_policy:ppanic.example=panic;tls_policy:phang.example=hang;" +
	"tls_transport:terror.example=error;tls_transport:tpanic.example=panic;tls_transport:thang.example=hang;" +
	"check:error@ourcorp.example=error;check:panic@ourcorp.example=panic;check:hang@ourcorp.example=hang"

// TestRealDaemonFaultsFailClosed runs the whole chain: real Postfix, the
// real daemon built with the fault hook, a fake MX that would take the mail.
// When the daemon's resolution errs, panics or hangs (answered by its
// 5 s watchdog), Postfix defers: 4.7.5 "client TLS configuration problem"
// for smtp_tls_policy_maps, 4.3.0 "address resolver failure" for
// transport_maps, the message stays queued and the MX gets nothing; the
// inbound smtpd answers RCPT with 450 4.7.10 and queues nothing. The same
// messages without a fault are delivered (healthy.example, bob@): the
// deferrals come from the faults. The daemon survives them all.
func TestRealDaemonFaultsFailClosed(t *testing.T) {
	harness.RequirePostfix(t)
	t.Parallel()
	bin := faultBinary(t)
	dir := t.TempDir()
	table := dir + "/table.yaml"
	// Nothing is listed: without a fault every domain gets NOTFOUND and
	// Postfix's "may", which delivers to the MX (STARTTLS, untrusted
	// certificate), and every recipient DUNNO.
	writeFile(t, table, "outbound: {}\n")
	policy := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	d := harness.StartDaemonEnv(t, []string{"TLSPOLICYD_FAULTS=" + faultRules}, bin, table, "--policyd", policy)

	ca := harness.NewTestCA(t, "tlspolicyd fault CA")
	mx := harness.NewTLSFakeMX(t, ca.Issue(t, "mx.example"), "127.0.0.2")
	domains := []string{"perror.example", "ppanic.example", "phang.example",
		"terror.example", "tpanic.example", "thang.example", "healthy.example"}
	hosts := map[string]string{}
	for _, dom := range domains {
		hosts[dom] = mx.Host
	}
	smtpd := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: mx.Port, Hosts: hosts,
		Main:   harness.InboundMain(policy, ca.Issue(t, "pf.tlspolicyd-test.invalid")),
		Master: []string{harness.SmtpdListener(smtpd, nil)}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := harness.WaitListening(ctx, smtpd, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.Stderr(), "injecting faults") {
		t.Fatalf("the daemon does not say it injects faults: built without %s?\n%s", harness.FaultsTag, d.Stderr())
	}

	qids := map[string]string{}
	for _, dom := range domains {
		qids[dom] = send(ctx, t, pf, "sender@origin.example", "user@"+dom)
	}

	outbound := []struct{ domain, reason, dsn string }{
		{"perror.example", "client TLS configuration problem", "4.7.5"},
		{"ppanic.example", "client TLS configuration problem", "4.7.5"},
		{"phang.example", "client TLS configuration problem", "4.7.5"},
		{"terror.example", "address resolver failure", "4.3.0"},
		{"tpanic.example", "address resolver failure", "4.3.0"},
		{"thang.example", "address resolver failure", "4.3.0"},
	}
	for _, tc := range outbound {
		t.Run("outbound "+tc.domain, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rcpt := "user@" + tc.domain
			r, err := pf.WaitDeferred(ctx, qids[tc.domain], rcpt, 40*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.DelayReason != tc.reason {
				t.Errorf("delay_reason %q, want %q", r.DelayReason, tc.reason)
			}
			var status string
			if !harness.WaitFor(ctx, 10*time.Second, func() bool {
				status = statusLine(pf.Log(), qids[tc.domain], rcpt)
				return status != ""
			}) {
				t.Fatalf("no status line for %s in the maillog", rcpt)
			}
			if want := ", relay=none, "; !strings.Contains(status, want) || !strings.HasSuffix(status, ", dsn="+tc.dsn+", status=deferred ("+tc.reason+")") {
				t.Errorf("status line %q, want relay=none, dsn=%s, status=deferred (%s)", status, tc.dsn, tc.reason)
			}
			if got := mx.ReceivedFor(rcpt); len(got) != 0 {
				t.Errorf("the MX received %+v", got)
			}
			if _, queued, err := pf.Entry(ctx, qids[tc.domain]); err != nil || !queued {
				t.Errorf("message %s not queued any more (err %v)", qids[tc.domain], err)
			}
		})
	}
	t.Run("outbound healthy.example delivered", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := pf.WaitGone(ctx, qids["healthy.example"], 40*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := mx.ReceivedFor("user@healthy.example"); len(got) != 1 {
			t.Errorf("the MX received %+v, want one message", got)
		}
	})

	inbound := []struct{ rcpt, reply string }{
		{"error@ourcorp.example", rejected("450 4.7.10", "error@ourcorp.example", "TLS policy service temporarily unavailable; try again later")},
		{"panic@ourcorp.example", rejected("450 4.7.10", "panic@ourcorp.example", "TLS policy service temporarily unavailable; try again later")},
		{"hang@ourcorp.example", rejected("450 4.7.10", "hang@ourcorp.example", "TLS policy service temporarily unavailable; try again later")},
		{"bob@ourcorp.example", "250 2.1.5 Ok"},
	}
	for _, tc := range inbound {
		t.Run("inbound "+tc.rcpt, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := harness.Swaks(ctx, smtpd, "--from", "alice@sender.example", "--to", tc.rcpt)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Reply("RCPT TO"); got != tc.reply {
				t.Errorf("RCPT reply %q, want %q\n%s", got, tc.reply, s)
			}
			if strings.HasPrefix(tc.reply, "4") && s.QueueID() != "" {
				t.Errorf("message queued as %s after a deferred RCPT", s.QueueID())
			}
		})
	}
}

// TestReleaseBuildHasNoFaultHook checks that the binary built without the
// tag carries no fault injection: neither the variable it reads nor the
// package (whose name is in the binary's symbol and file tables), while the
// test build has both.
func TestReleaseBuildHasNoFaultHook(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		want bool
	}{{daemonBinary(t), false}, {faultBinary(t), true}} {
		b, err := os.ReadFile(tc.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"TLSPOLICYD_FAULTS", "tlspolicyd/internal/fault"} {
			if got := bytes.Contains(b, []byte(s)); got != tc.want {
				t.Errorf("%s contains %q: %v, want %v", tc.bin, s, got, tc.want)
			}
		}
	}
}
