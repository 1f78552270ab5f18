package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// statusLine returns the delivery agent's "QID: to=<rcpt>, relay=…,
// status=…" line in log, or "".
func statusLine(log, qid, rcpt string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, " "+qid+": to=<"+rcpt+">, ") && strings.Contains(line, " status=") {
			return strings.TrimSuffix(line, "\n")
		}
	}
	return ""
}

// TestOutboundFailClosed checks README.md's fail-closed rows against real
// Postfix: when the daemon (or a stub in its place) answers TEMP or PERM,
// when nothing listens on its port, and when the daemon's verify or secure
// answer meets an MX whose certificate comes from a CA Postfix does not
// trust, the message stays deferred (never delivered in clear, never
// bounced), the fake MX gets no MAIL, and Postfix gives the reason the
// README names.
func TestOutboundFailClosed(t *testing.T) {
	harness.RequirePostfix(t)
	ca := harness.NewTestCA(t, "tlspolicyd untrusted CA")
	daemon, _ := startDaemon(t, `outbound:
  verify.example: verify
  secure.example: secure
recipients:
  user@rcpt-verify.example: verify
senders:
  secure-sender@origin.example: secure
`, false)
	real := func(*testing.T) string { return daemon.Addr }
	stub := func(replies map[string]string) func(*testing.T) string {
		return func(t *testing.T) string { return harness.NewStubSocketmap(t, replies).Addr }
	}
	closed := func(t *testing.T) string { return "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1")) }

	// In the expected texts {addr} is the socketmap's address, {ip} and
	// {port} the fake MX's.
	const (
		tlsProblem = "client TLS configuration problem"
		resolver   = "address resolver failure"
		notVerif   = "Server certificate not verified"
	)
	tests := []struct {
		name      string
		socketmap func(*testing.T) string
		from      string // "" = sender@origin.example
		rcpt      string
		// tls: the MX offers STARTTLS with a certificate for the
		// recipient's domain from the untrusted CA, and Postfix must
		// complete the handshake, then send no MAIL.
		tls bool
		// reason is the exact delay_reason (postqueue -j); relay and dsn
		// are the status line's (with status=deferred (reason)); log are
		// further maillog lines.
		reason, relay, dsn string
		log                []string
	}{
		{
			name:      "TEMP for tls_policy",
			socketmap: stub(map[string]string{"tls_policy temp.example": "TEMP policy store unavailable"}),
			rcpt:      "user@temp.example",
			reason:    tlsProblem,
			relay:     "none",
			dsn:       "4.7.5",
			log: []string{
				"warning: socketmap:inet:{addr}:tls_policy socketmap server temporary error: policy store unavailable",
				`warning: smtp_tls_policy_maps, next-hop destination "temp.example": policy table lookup error`,
				"warning: TLS policy lookup for temp.example/temp.example: " + tlsProblem,
			},
		},
		{
			name:      "PERM for tls_policy",
			socketmap: stub(map[string]string{"tls_policy perm.example": "PERM unknown map"}),
			rcpt:      "user@perm.example",
			reason:    tlsProblem,
			relay:     "none",
			dsn:       "4.7.5",
			log: []string{
				"warning: socketmap:inet:{addr}:tls_policy socketmap server permanent error: unknown map",
				`warning: smtp_tls_policy_maps, next-hop destination "perm.example": policy table lookup error`,
			},
		},
		{
			name:      "TEMP for tls_transport",
			socketmap: stub(map[string]string{"tls_transport user@temptr.example": "TEMP policy store unavailable"}),
			rcpt:      "user@temptr.example",
			reason:    resolver,
			relay:     "none",
			dsn:       "4.3.0",
			log: []string{
				"warning: socketmap:inet:{addr}:tls_transport socketmap server temporary error: policy store unavailable",
				"warning: transport_maps lookup failure",
			},
		},
		{
			name:      "PERM for tls_sender_transport",
			socketmap: stub(map[string]string{"tls_sender_transport sender@origin.example": "PERM unknown map"}),
			rcpt:      "user@permsender.example",
			reason:    resolver,
			relay:     "none",
			dsn:       "4.3.0",
			log: []string{
				"warning: socketmap:inet:{addr}:tls_sender_transport socketmap server permanent error: unknown map",
				"warning: sender_dependent_default_transport_maps lookup failure",
			},
		},
		{
			// transport_maps asks the daemon about every recipient before
			// any TLS lookup: a domain no table names is deferred too.
			name:      "daemon down",
			socketmap: closed,
			rcpt:      "user@unlisted.example",
			reason:    resolver,
			relay:     "none",
			dsn:       "4.3.0",
			log: []string{
				"warning: connect to {addr}: Connection refused",
				"warning: table socketmap:inet:{addr}:tls_transport lookup error: Connection refused",
			},
		},
		{
			name:      "verify, certificate from an untrusted CA",
			socketmap: real,
			rcpt:      "user@verify.example",
			tls:       true,
			reason:    notVerif,
			relay:     "verify.example[{ip}]:{port}",
			dsn:       "4.7.5",
			log:       []string{"certificate verification failed for verify.example[{ip}]:{port}: untrusted issuer /CN=tlspolicyd untrusted CA"},
		},
		{
			name:      "secure, certificate from an untrusted CA",
			socketmap: real,
			rcpt:      "user@secure.example",
			tls:       true,
			reason:    notVerif,
			relay:     "secure.example[{ip}]:{port}",
			dsn:       "4.7.5",
			log:       []string{"certificate verification failed for secure.example[{ip}]:{port}: untrusted issuer /CN=tlspolicyd untrusted CA"},
		},
		{
			// tls_transport routes it through master.cf's tlspolicyd-verify.
			name:      "verify for a recipients: entry, certificate from an untrusted CA",
			socketmap: real,
			rcpt:      "user@rcpt-verify.example",
			tls:       true,
			reason:    notVerif,
			relay:     "rcpt-verify.example[{ip}]:{port}",
			dsn:       "4.7.5",
			log:       []string{"certificate verification failed for rcpt-verify.example[{ip}]:{port}: untrusted issuer /CN=tlspolicyd untrusted CA"},
		},
		{
			// tls_sender_transport routes it through tlspolicyd-secure.
			name:      "secure for a senders: entry, certificate from an untrusted CA",
			socketmap: real,
			from:      "secure-sender@origin.example",
			rcpt:      "user@sender-secure.example",
			tls:       true,
			reason:    notVerif,
			relay:     "sender-secure.example[{ip}]:{port}",
			dsn:       "4.7.5",
			log:       []string{"certificate verification failed for sender-secure.example[{ip}]:{port}: untrusted issuer /CN=tlspolicyd untrusted CA"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case has its own instance; most of the time is Postfix starting
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, domain, _ := strings.Cut(tc.rcpt, "@")
			var mx *harness.FakeMX
			if tc.tls {
				mx = untrustedMX(t, ca, "127.0.0.3", domain)
			} else {
				mx = harness.NewFakeMX(t, "127.0.0.2")
			}
			addr := tc.socketmap(t)
			pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: addr, MXPort: mx.Port,
				Hosts: map[string]string{domain: mx.Host}})
			from := tc.from
			if from == "" {
				from = "sender@origin.example"
			}
			qid := send(ctx, t, pf, from, tc.rcpt)

			r, err := pf.WaitDeferred(ctx, qid, tc.rcpt, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.DelayReason != tc.reason {
				t.Errorf("delay_reason %q, want %q", r.DelayReason, tc.reason)
			}
			expand := strings.NewReplacer("{addr}", addr, "{ip}", mx.Host, "{port}", itoa(mx.Port)).Replace
			// postlogd writes asynchronously: wait for the status line.
			var status string
			if !harness.WaitFor(ctx, 10*time.Second, func() bool {
				status = statusLine(pf.Log(), qid, tc.rcpt)
				return status != ""
			}) {
				t.Fatalf("no status line for %s %s in the maillog", qid, tc.rcpt)
			}
			head := " to=<" + tc.rcpt + ">, relay=" + expand(tc.relay) + ", "
			tail := ", dsn=" + tc.dsn + ", status=deferred (" + tc.reason + ")"
			if !strings.Contains(status, head) || !strings.HasSuffix(status, tail) {
				t.Errorf("status line %q, want %q … %q", status, head, tail)
			}
			log := pf.Log()
			for _, want := range tc.log {
				if !strings.Contains(log, expand(want)) {
					t.Errorf("maillog lacks %q", expand(want))
				}
			}

			if m := mx.Mails(); len(m) != 0 {
				t.Errorf("the MX received MAIL: %+v", m)
			}
			if m := mx.Messages(); len(m) != 0 {
				t.Errorf("the MX received messages: %+v", m)
			}
			switch {
			case tc.tls && mx.TLSHandshakes() == 0:
				t.Errorf("Postfix completed no TLS handshake with the MX (sessions %d): the certificate was never checked", mx.Sessions())
			case !tc.tls && mx.Sessions() != 0:
				t.Errorf("Postfix connected to the MX %d times, want none", mx.Sessions())
			}
		})
	}
}
