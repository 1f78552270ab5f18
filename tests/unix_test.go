package tests

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestUnixSockets runs the daemon on unix sockets inside a Postfix
// instance's queue directory, as examples/postfix/main.cf describes:
// socketmap:unix:private/tlspolicyd (tls_policy from the chrooted smtp
// client, tls_transport from the chrooted trivial-rewrite) and
// check_policy_service unix:private/tlspolicyd-policy (chrooted smtpd).
// The sockets keep the daemon's default mode 0660 with the postfix group.
// Enforced mail is held for TLS, other mail delivered, and an enforced
// sender without TLS is deferred at RCPT while the same over TLS passes.
func TestUnixSockets(t *testing.T) {
	harness.RequirePostfix(t)
	t.Parallel()
	mx := harness.NewFakeMX(t, "127.0.0.2")
	ca := harness.NewTestCA(t, "tlspolicyd unix CA")
	smtpd := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	main := harness.InboundMain("", ca.Issue(t, "pf.tlspolicyd-test.invalid"))
	main["smtpd_recipient_restrictions"] = "check_policy_service unix:private/tlspolicyd-policy"
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: "unix:private/tlspolicyd", MXPort: mx.Port,
		Hosts: map[string]string{"bank.example": mx.Host, "open.example": mx.Host, "partner.example": mx.Host},
		Main:  main, Master: []string{harness.SmtpdListener(smtpd, nil)}})

	table := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, table, `outbound:
  bank.example: encrypt
recipients:
  cfo@partner.example: encrypt
inbound:
  - name: bank
    from: [bank.example]
    require: tls
`)
	sockmap := filepath.Join(pf.QueueDir, "private", "tlspolicyd")
	policy := filepath.Join(pf.QueueDir, "private", "tlspolicyd-policy")
	d := harness.StartDaemonAt(t, nil, daemonBinary(t), table, "unix:"+sockmap, "--policyd", "unix:"+policy)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !harness.WaitFor(ctx, 10*time.Second, func() bool { _, err := os.Stat(policy); return err == nil }) {
		t.Fatalf("no policy socket %s\n%s", policy, d.Stderr())
	}
	// Postfix's processes run as user postfix: give the sockets its group,
	// as a deployment would (the daemon in group postfix, or chgrp).
	grp, err := user.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(grp.Gid)
	for _, p := range []string{sockmap, policy} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
			t.Errorf("%s: mode %v, want a socket with 0660", p, st.Mode())
		}
		if err := os.Chown(p, -1, gid); err != nil {
			t.Fatal(err)
		}
	}

	bank := send(ctx, t, pf, "sender@origin.example", "alice@bank.example")
	open := send(ctx, t, pf, "sender@origin.example", "carol@open.example")
	cfo := send(ctx, t, pf, "sender@origin.example", "cfo@partner.example")
	for _, held := range []struct{ qid, rcpt, host string }{
		{bank, "alice@bank.example", "bank.example"},
		{cfo, "cfo@partner.example", "partner.example"},
	} {
		r, err := pf.WaitDeferred(ctx, held.qid, held.rcpt, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(r.DelayReason, notOffered(held.host)) {
			t.Errorf("%s: delay_reason %q, want %q", held.rcpt, r.DelayReason, notOffered(held.host))
		}
	}
	if err := pf.WaitGone(ctx, open, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := mx.ReceivedFor("carol@open.example"); len(got) != 1 {
		t.Errorf("the MX received %+v for carol@open.example, want one message", got)
	}
	if m := mx.ReceivedFor("alice@bank.example"); len(m) != 0 {
		t.Errorf("the MX received mail for alice@bank.example: %+v", m)
	}
	if log := pf.Log(); strings.Contains(log, "warning: socketmap") || strings.Contains(log, "lookup error") {
		t.Errorf("Postfix warned about the socketmap:\n%s", log)
	}

	plain, err := harness.Swaks(ctx, smtpd, "--from", "alice@bank.example", "--to", "bob@ourcorp.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Reply("RCPT TO"); !strings.HasPrefix(got, "450 4.7.10 <bob@ourcorp.example>: Recipient address rejected: TLS is required") {
		t.Errorf("RCPT without TLS: %q, want the bank rule's 450 4.7.10\n%s", got, plain)
	}
	withTLS, err := harness.Swaks(ctx, smtpd, "--tls", "--from", "alice@bank.example", "--to", "bob@ourcorp.example")
	if err != nil {
		t.Fatal(err)
	}
	if got := withTLS.Reply("RCPT TO"); !strings.HasPrefix(got, "250 ") {
		t.Errorf("RCPT over TLS: %q, want 250\n%s", got, withTLS)
	}
}
