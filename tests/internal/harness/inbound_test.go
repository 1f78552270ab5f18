package harness

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
)

// swaksRejectedTLS is a swaks transcript (swaks 20201014.0 against
// Postfix 3.7) whose recipient was refused inside TLS.
const swaksRejectedTLS = `=== Trying 127.0.0.1:38843...
=== Connected to 127.0.0.1.
<-  220 pf.tlspolicyd-test.invalid ESMTP Postfix
 -> EHLO client.tlspolicyd-test.invalid
<-  250-pf.tlspolicyd-test.invalid
<-  250-STARTTLS
<-  250 CHUNKING
 -> STARTTLS
<-  220 2.0.0 Ready to start TLS
=== TLS started with cipher TLSv1.2:ECDHE-ECDSA-AES256-GCM-SHA384:256
 ~> EHLO client.tlspolicyd-test.invalid
<~  250-pf.tlspolicyd-test.invalid
<~  250 CHUNKING
 ~> MAIL FROM:<erin@modern.example>
<~  250 2.1.0 Ok
 ~> RCPT TO:<bob@ourcorp.example>
<~* 450 4.7.10 <bob@ourcorp.example>: Recipient address rejected: TLS 1.3 is required
 ~> QUIT
<~  221 2.0.0 Bye
=== Connection closed with remote host.
`

// swaksAccepted is a plaintext transcript of an accepted message.
const swaksAccepted = `=== Trying 127.0.0.1:38843...
<-  220 pf.tlspolicyd-test.invalid ESMTP Postfix
 -> EHLO client.tlspolicyd-test.invalid
<-  250-pf.tlspolicyd-test.invalid
<-  250 CHUNKING
 -> MAIL FROM:<>
<-  250 2.1.0 Ok
 -> RCPT TO:<bob@ourcorp.example>
<-  250 2.1.5 Ok
 -> DATA
<-  354 End data with <CR><LF>.<CR><LF>
 -> Subject: test
 -> 
 -> This is a test mailing
 -> 
 -> .
<-  250 2.0.0 Ok: queued as 54CE4984553
 -> QUIT
<-  221 2.0.0 Bye
`

// TestSwaksSessionReply checks the transcript parser the inbound tests
// read SMTP replies with.
func TestSwaksSessionReply(t *testing.T) {
	rejected := SwaksSession{Result: Result{Stdout: swaksRejectedTLS, Code: 24}}
	accepted := SwaksSession{Result: Result{Stdout: swaksAccepted}}
	tests := []struct {
		name string
		s    SwaksSession
		cmd  string
		want string
	}{
		{"error reply inside TLS", rejected, "RCPT TO", "450 4.7.10 <bob@ourcorp.example>: Recipient address rejected: TLS 1.3 is required"},
		{"first of two EHLOs, multi-line", rejected, "EHLO", "250-pf.tlspolicyd-test.invalid\n250-STARTTLS\n250 CHUNKING"},
		{"plaintext command", rejected, "STARTTLS", "220 2.0.0 Ready to start TLS"},
		{"command case-insensitive", rejected, "mail from", "250 2.1.0 Ok"},
		{"never sent", rejected, "DATA", ""},
		{"accepted recipient", accepted, "RCPT TO", "250 2.1.5 Ok"},
		{"end of data", accepted, ".", "250 2.0.0 Ok: queued as 54CE4984553"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Reply(tc.cmd); got != tc.want {
				t.Errorf("Reply(%q) = %q, want %q", tc.cmd, got, tc.want)
			}
		})
	}
	if got := accepted.QueueID(); got != "54CE4984553" {
		t.Errorf("QueueID() = %q, want 54CE4984553", got)
	}
	if got := rejected.QueueID(); got != "" {
		t.Errorf("QueueID() of a refused message = %q, want empty", got)
	}
}

// TestCertFingerprints checks that the fingerprints match what OpenSSL
// (and so Postfix) computes for the same certificate.
func TestCertFingerprints(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		e2e.Skipf(t, "openssl not installed")
	}
	c := NewTestCA(t, "fingerprint test CA").Issue(t, "client.example")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	res, err := Run(ctx, "", "openssl", "x509", "-in", c.Cert, "-noout", "-fingerprint", "-sha256")
	if err != nil || res.Code != 0 {
		t.Fatalf("openssl x509: %v %s", err, res)
	}
	// "sha256 Fingerprint=AB:CD:…" (OpenSSL 3; 1.1 says "SHA256").
	_, want, _ := strings.Cut(strings.TrimSpace(res.Stdout), "=")
	if got := c.Fingerprint(); got != want {
		t.Errorf("Fingerprint() = %s, openssl says %s", got, want)
	}

	pub, err := Run(ctx, "", "openssl", "x509", "-in", c.Cert, "-noout", "-pubkey")
	if err != nil || pub.Code != 0 {
		t.Fatalf("openssl x509 -pubkey: %v %s", err, pub)
	}
	der, err := Run(ctx, pub.Stdout, "openssl", "pkey", "-pubin", "-outform", "DER")
	if err != nil || der.Code != 0 {
		t.Fatalf("openssl pkey: %v %s", err, der)
	}
	dgst, err := Run(ctx, der.Stdout, "openssl", "dgst", "-sha256", "-c")
	if err != nil || dgst.Code != 0 {
		t.Fatalf("openssl dgst: %v %s", err, dgst)
	}
	// "(stdin)= ab:cd:…" in lower case.
	_, wantPub, _ := strings.Cut(strings.TrimSpace(dgst.Stdout), "= ")
	if got := c.PubkeyFingerprint(); got != strings.ToUpper(wantPub) {
		t.Errorf("PubkeyFingerprint() = %s, openssl says %s", got, strings.ToUpper(wantPub))
	}
}
