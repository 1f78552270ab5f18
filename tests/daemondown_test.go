package tests

import (
	"context"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestDaemonDownRefusesIncomingMail checks README's warning against real
// Postfix: with examples/postfix/main.cf's transport_maps pointing at a
// daemon that does not answer, smtpd refuses every recipient of incoming
// mail with 451 4.3.0 (trivial-rewrite asks transport_maps at RCPT), also
// from a sender no rule covers and with no policy service in the way.
func TestDaemonDownRefusesIncomingMail(t *testing.T) {
	harness.RequirePostfix(t)
	closed := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	smtpd := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	harness.NewPostfix(t, harness.PostfixConfig{Socketmap: closed,
		Main: map[string]string{"relay_domains": harness.InboundDomain, "mynetworks": "",
			"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"},
		Master: []string{harness.SmtpdListener(smtpd, nil)}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := harness.WaitListening(ctx, smtpd, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	rcpt := "bob@" + harness.InboundDomain
	s, err := harness.Swaks(ctx, smtpd, "--from", "carol@open.example", "--to", rcpt)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Reply("RCPT TO"), "451 4.3.0 <"+rcpt+">: Temporary lookup failure"; got != want {
		t.Errorf("RCPT reply with the daemon down: %q, want %q\n%s", got, want, s)
	}
}
