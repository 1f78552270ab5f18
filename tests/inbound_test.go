package tests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// inboundTableTmpl holds one inbound rule per requirement and action the
// end-to-end test exercises; PINNED is replaced by the SHA-256 fingerprint
// of the registered client certificate.
const inboundTableTmpl = `inbound:
  - name: bank
    from: [bank.example, .bank.example]
    require: tls
  - name: strict
    from: [strict.example]
    require: tls
    action: reject
  - name: modern
    from: [modern.example]
    require: tls1.3
  - name: pinned
    from: [pinned.example]
    require: fingerprint
    fingerprints: ["PINNED"]
  - name: certonly
    from: [certonly.example]
    require: cert
  - name: pilot
    from: [pilot.example]
    require: tls
    testing: true
    header: X-TLS-Policy
  - name: quiet-pilot
    from: [quiet.example]
    require: tls
    testing: true
  - name: bounces
    from: ["<>"]
    to: [bounces@ourcorp.example]
    require: tls
`

// inboundEnv is a receiving Postfix instance asking the daemon (over
// check_policy_service) at RCPT, with two smtpd listeners: Smtpd uses the
// daemon, DownSmtpd a policy service address where nothing listens.
type inboundEnv struct {
	pf               *harness.Postfix
	smtpd, downSmtpd string
	// closed is downSmtpd's policy service address.
	closed string
	// pinned is the client certificate the fingerprint rule registers,
	// other one it does not know (same CA, so only the pin tells them apart).
	pinned, other harness.CertFiles
}

// newInbound starts the daemon with the inbound table and a policyd
// listener, and a receiving Postfix instance (harness.InboundMain) whose
// smtpd presents a certificate from a test CA.
func newInbound(t *testing.T) *inboundEnv {
	t.Helper()
	ca := harness.NewTestCA(t, "tlspolicyd test CA")
	server := ca.Issue(t, "pf.tlspolicyd-test.invalid")
	env := &inboundEnv{
		pinned: ca.Issue(t, "client.pinned.example"),
		other:  ca.Issue(t, "client.other.example"),
	}

	table := filepath.Join(t.TempDir(), "inbound.yaml")
	writeFile(t, table, strings.ReplaceAll(inboundTableTmpl, "PINNED", env.pinned.Fingerprint()))
	policyd := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	harness.StartDaemon(t, daemonBinary(t), table, "--policyd", policyd)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := harness.WaitListening(ctx, policyd, 10*time.Second); err != nil {
		t.Fatalf("daemon policyd listener: %v", err)
	}

	env.smtpd = "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	env.downSmtpd = "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	env.closed = "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	env.pf = harness.NewPostfix(t, harness.PostfixConfig{
		Main: harness.InboundMain(policyd, server),
		Master: []string{
			harness.SmtpdListener(env.smtpd, nil),
			harness.SmtpdListener(env.downSmtpd, map[string]string{
				"smtpd_recipient_restrictions": "check_policy_service inet:" + env.closed,
			}),
		},
	})
	for _, addr := range []string{env.smtpd, env.downSmtpd} {
		if err := harness.WaitListening(ctx, addr, 10*time.Second); err != nil {
			t.Fatalf("postfix smtpd: %v", err)
		}
	}
	return env
}

// rejected is the RCPT reply Postfix builds from a policy action "CODE
// TEXT": it puts the recipient and "Recipient address rejected: " in
// front of the daemon's text (docs/postfix.md, "Inbound: policy delegation").
func rejected(code, rcpt, text string) string {
	return code + " <" + rcpt + ">: Recipient address rejected: " + text
}

// TestInboundPolicyDelegation drives a real Postfix smtpd with swaks; its
// check_policy_service asks the daemon, whose inbound rules decide what a
// sending client sees at RCPT: enforced rules defer (450 4.7.10) or reject
// (550 5.7.10) mail that arrives without what they require, with a text
// telling the sender what to fix; mail that meets them, mail from
// senders no rule names, and mail under testing rules is accepted.
func TestInboundPolicyDelegation(t *testing.T) {
	harness.RequirePostfix(t)
	env := newInbound(t)

	const bob = "bob@ourcorp.example"
	tls := []string{"--tls"}
	tls12 := []string{"--tls", "--tls-protocol", "tlsv1_2"}
	withCert := func(c harness.CertFiles) []string {
		return []string{"--tls", "--tls-cert", c.Cert, "--tls-key", c.Key}
	}
	tests := []struct {
		name     string
		from, to string
		args     []string
		// rcpt is the expected RCPT reply prefix; the text after it must
		// contain every string of mention.
		rcpt    string
		mention []string
		// header is the first header line of the held message (checked
		// when the RCPT was accepted); "" means no X-TLS-Policy anywhere.
		header string
	}{
		{
			name: "enforced sender without TLS is deferred", from: "alice@bank.example", to: bob,
			rcpt:    rejected("450 4.7.10", bob, "TLS is required for mail from bank.example"),
			mention: []string{"rule bank", "not encrypted", "ask the postmaster of bank.example to enable STARTTLS"},
		},
		{
			name: "enforced subdomain without TLS is deferred", from: "alice@mail.bank.example", to: bob,
			rcpt:    rejected("450 4.7.10", bob, "TLS is required for mail from mail.bank.example"),
			mention: []string{"postmaster of mail.bank.example"},
		},
		{name: "enforced sender with TLS is accepted", from: "alice@bank.example", to: bob, args: tls, rcpt: "250 2.1.5 Ok"},
		{
			name: "reject rule without TLS is rejected", from: "dave@strict.example", to: bob,
			rcpt:    rejected("550 5.7.10", bob, "TLS is required for mail from strict.example"),
			mention: []string{"postmaster of strict.example"},
		},
		{name: "reject rule with TLS is accepted", from: "dave@strict.example", to: bob, args: tls, rcpt: "250 2.1.5 Ok"},
		{
			name: "tls1.3 rule over TLS 1.2 is deferred", from: "erin@modern.example", to: bob, args: tls12,
			rcpt:    rejected("450 4.7.10", bob, "TLS 1.3 is required for mail from modern.example"),
			mention: []string{"TLSv1.2"},
		},
		{
			name: "tls1.3 rule without TLS is deferred", from: "erin@modern.example", to: bob,
			rcpt: rejected("450 4.7.10", bob, "TLS 1.3 is required for mail from modern.example"),
		},
		{name: "tls1.3 rule over TLS 1.3 is accepted", from: "erin@modern.example", to: bob, args: tls, rcpt: "250 2.1.5 Ok"},
		{name: "fingerprint rule with the registered cert is accepted", from: "fred@pinned.example", to: bob, args: withCert(env.pinned), rcpt: "250 2.1.5 Ok"},
		{
			name: "fingerprint rule with another cert is deferred", from: "fred@pinned.example", to: bob, args: withCert(env.other),
			rcpt:    rejected("450 4.7.10", bob, "a registered TLS client certificate is required for mail from pinned.example"),
			mention: []string{"not the one on record"},
		},
		{
			name: "fingerprint rule without a cert is deferred", from: "fred@pinned.example", to: bob, args: tls,
			rcpt:    rejected("450 4.7.10", bob, ""),
			mention: []string{"pinned.example", "client certificate"},
		},
		{name: "cert rule with any cert is accepted", from: "gina@certonly.example", to: bob, args: withCert(env.other), rcpt: "250 2.1.5 Ok"},
		{
			name: "cert rule without a cert is deferred", from: "gina@certonly.example", to: bob, args: tls,
			rcpt:    rejected("450 4.7.10", bob, "a TLS client certificate is required for mail from certonly.example"),
			mention: []string{"no client certificate"},
		},
		{
			name: "testing rule without TLS is accepted with a header", from: "hank@pilot.example", to: bob,
			rcpt: "250 2.1.5 Ok", header: "X-TLS-Policy: would defer (rule pilot): TLS is required; the connection was not encrypted",
		},
		{name: "testing rule met adds no header", from: "hank@pilot.example", to: bob, args: tls, rcpt: "250 2.1.5 Ok"},
		{name: "testing rule without header option adds none", from: "ivy@quiet.example", to: bob, rcpt: "250 2.1.5 Ok"},
		{name: "unrelated sender without TLS is accepted", from: "carol@open.example", to: bob, rcpt: "250 2.1.5 Ok"},
		{name: "sender in a parent domain is unaffected", from: "carol@example", to: bob, rcpt: "250 2.1.5 Ok"},
		{name: "null sender does not match domain rules", from: "<>", to: bob, rcpt: "250 2.1.5 Ok"},
		{name: "rule naming <> ignores other senders", from: "carol@open.example", to: "bounces@ourcorp.example", rcpt: "250 2.1.5 Ok"},
		{
			name: "null sender matches a rule naming <>", from: "<>", to: "bounces@ourcorp.example",
			rcpt:    rejected("450 4.7.10", "bounces@ourcorp.example", "TLS is required for mail to bounces@ourcorp.example"),
			mention: []string{"ask the sender's postmaster"},
		},
	}
	// Each case is its own SMTP session: they run in parallel on the one
	// instance and daemon, as concurrent senders would.
	t.Run("rules", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				args := append([]string{"--from", tc.from, "--to", tc.to}, tc.args...)
				s, err := harness.Swaks(ctx, env.smtpd, args...)
				if err != nil {
					t.Fatal(err)
				}
				got := s.Reply("RCPT TO")
				if !strings.HasPrefix(got, tc.rcpt) {
					t.Fatalf("RCPT reply %q, want prefix %q\n%s", got, tc.rcpt, s)
				}
				for _, m := range tc.mention {
					if !strings.Contains(got, m) {
						t.Errorf("RCPT reply %q does not mention %q", got, m)
					}
				}
				if !strings.HasPrefix(got, "250 ") {
					if qid := s.QueueID(); qid != "" {
						t.Errorf("message queued as %s although its only recipient was refused", qid)
					}
					return
				}
				qid := s.QueueID()
				if qid == "" {
					t.Fatalf("accepted recipient but the message was not queued\n%s", s)
				}
				headers, err := env.pf.Postcat(ctx, qid)
				if err != nil {
					t.Fatal(err)
				}
				first, _, _ := strings.Cut(headers, "\n")
				switch {
				case tc.header != "" && first != tc.header:
					t.Errorf("held message %s: first header %q, want %q\nheaders:\n%s", qid, first, tc.header, headers)
				case tc.header == "" && strings.Contains(headers, "X-TLS-Policy"):
					t.Errorf("held message %s has an X-TLS-Policy header:\n%s", qid, headers)
				}
			})
		}
	})

	// Postfix fails closed: with no policy service answering, smtpd
	// refuses the recipient for now rather than accepting unchecked mail.
	t.Run("daemon down fails closed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := harness.Swaks(ctx, env.downSmtpd, "--from", "carol@open.example", "--to", bob, "--tls")
		if err != nil {
			t.Fatal(err)
		}
		want := rejected("451 4.3.5", bob, "Server configuration problem")
		if got := s.Reply("RCPT TO"); got != want {
			t.Fatalf("RCPT reply %q, want %q\n%s", got, want, s)
		}
		if qid := s.QueueID(); qid != "" {
			t.Errorf("message queued as %s without a policy check", qid)
		}
		// The reason is the unreachable policy service, not anything else.
		// (postlogd writes the maillog asynchronously.)
		warning := "warning: problem talking to server " + env.closed
		if !harness.WaitFor(ctx, 5*time.Second, func() bool { return strings.Contains(env.pf.Log(), warning) }) {
			t.Errorf("maillog lacks %q", warning)
		}
	})
}
