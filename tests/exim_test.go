package tests

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/exim"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// The Exim tests run Debian's Exim 4.96 (tests/install-exim.sh unpacks it;
// $EXIM_BIN overrides) with a configuration that contains the fragments of
// examples/exim verbatim, against the daemon built from ./cmd/tlspolicyd and
// against scripted servers for the answers the daemon never gives. They
// skip when not root or when Exim is not unpacked.

// eximTable is the daemon's policy table for the Exim tests. FINGERPRINT is
// replaced by the pinned client certificate's fingerprint.
const eximTable = `outbound:
  bank.example: encrypt
  .bank.example: encrypt
  verify.example: verify
  secure.example: secure match=nexthop:dot-nexthop protocols=>=TLSv1.2
  none.example: none
  may.example: may
  dane.example: dane
  dane-only.example: dane-only
  pinned.example: fingerprint match=FINGERPRINT

inbound:
  - name: bank-partners
    from: [bank.example, .bank.example]
    require: tls1.2
    action: defer
  - name: modern
    from: [modern.example]
    require: tls1.3
  - name: pinned-partner
    from: [pinned.example]
    require: fingerprint
    fingerprints: [FINGERPRINT]
  - name: legal-inbox
    to: [legal@ourcorp.example]
    require: tls
    action: reject
  - name: partner-mx
    client: [.partner.example]
    require: tls
  - name: pilot
    client: [192.0.2.0/24]
    require: cert
    testing: true
    header: X-TLS-Policy
`

// eximOtherFingerprint is a syntactically valid fingerprint no test certificate has.
var eximOtherFingerprint = strings.TrimSuffix(strings.Repeat("AB:", 32), ":")

// eximExamples returns the four fragments of examples/exim, read from the
// repository so that what is tested is what users copy.
func eximExamples(t *testing.T) (main, acl, routers, transports string) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, "examples", "exim", name))
		if err != nil {
			t.Fatalf("read the Exim example: %v", err)
		}
		return string(b)
	}
	return read("main.conf"), read("acl.conf"), read("routers.conf"), read("transports.conf")
}

// eximConfig is a complete test configuration around the examples: the RCPT
// ACL calls tlspolicyd_rcpt after relay control, as acl.conf says; the DATA
// ACL logs the headers so a test can see what the RCPT ACL added; the remote
// router (an accept router, so -bt needs no DNS) uses TLSPOLICYD_TRANSPORT.
// mainExtra goes before the example's macros.
func eximConfig(t *testing.T, mainExtra string) exim.Config {
	main, acl, routers, transports := eximExamples(t)
	return exim.Config{
		Main: `domainlist local_domains = ourcorp.example
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
` + mainExtra + "\n" + main,
		ACL: `acl_check_rcpt:
  accept  hosts = :
  require message = relay not permitted
          domains = +local_domains
  require acl = tlspolicyd_rcpt
  accept

acl_check_data:
  warn    logwrite = HEADERS: ${tr{$message_headers}{\n}{|}}
  accept

` + acl,
		Routers: routers + `
# test only: a router that replaces the answer, as a careless local router
# setting address_data would
clobber:
  driver = redirect
  domains = replaced.example
  address_data = garbage
  data =

remote_mx:
  driver = accept
  domains = ! +local_domains
  transport = TLSPOLICYD_TRANSPORT
  dnssec_require_domains = TLSPOLICYD_DNSSEC_DOMAINS
`,
		Transports: `remote_smtp:
  driver = smtp

` + transports,
	}
}

// eximDaemon starts tlspolicyd on eximTable (with fingerprint fp) with
// both the socketmap and the policy listener, and returns the daemon and the
// policy listener's address.
func eximDaemon(t *testing.T, fp string) (*harness.Daemon, string) {
	t.Helper()
	bin := daemonBinary(t)
	path := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, path, strings.ReplaceAll(eximTable, "FINGERPRINT", fp))
	policy := net.JoinHostPort("127.0.0.1", itoa(harness.FreePort(t, "127.0.0.1")))
	d := harness.StartDaemon(t, bin, path, "--policyd", policy) // the last --policyd wins
	ok := harness.WaitFor(context.Background(), 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", policy, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	if !ok {
		t.Fatalf("tlspolicyd policy listener %s not accepting connections\n%s", policy, d.Stderr())
	}
	return d, policy
}

// eximNetstring encodes s as a netstring, as the socketmap server frames its replies.
func eximNetstring(s string) string { return itoa(len(s)) + ":" + s + "," }

// eximInet is the ${readsocket} spec for a host:port address.
func eximInet(addr string) string { return "inet:" + addr }

// eximClosedAddr is a loopback address nothing listens on.
func eximClosedAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", itoa(harness.FreePort(t, "127.0.0.1")))
}

// TestEximOutboundExpansion evaluates the outbound expressions of
// examples/exim/main.conf with exim -be: the socketmap lookup for a key
// (TLSPOLICYD_LOOKUP with -DTLSPOLICYD_KEY), then, for that answer, the
// router's verdict (TLSPOLICYD_CHECK: empty = route on, ":defer:" = defer),
// the transport (TLSPOLICYD_TRANSPORT) and the DNSSEC requirement.
func TestEximOutboundExpansion(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	d, _ := eximDaemon(t, eximOtherFingerprint)
	stub := harness.NewStubSocketmap(t, map[string]string{
		"tls_policy temp.example":    "TEMP boom",
		"tls_policy timeout.example": "TIMEOUT slow",
		"tls_policy perm.example":    "PERM unknown map",
		"tls_policy bogus.example":   "OK bogus",
	})
	x := exim.New(t, eximConfig(t, ""))

	tests := []struct {
		name, server, key string
		answer            string // raw ${readsocket} result
		check             string // TLSPOLICYD_CHECK: "" routes on
		transport         string
		dnssec            string
	}{
		{"enforced", d.Addr, "bank.example", eximNetstring("OK encrypt"), "", "tlspolicyd_encrypt", ""},
		{"parent entry", d.Addr, "a.b.bank.example", eximNetstring("OK encrypt"), "", "tlspolicyd_encrypt", ""},
		{"case folded by the daemon", d.Addr, "Bank.EXAMPLE", eximNetstring("OK encrypt"), "", "tlspolicyd_encrypt", ""},
		{"unlisted", d.Addr, "open.example", eximNetstring("NOTFOUND "), "", "remote_smtp", ""},
		{"verify", d.Addr, "verify.example", eximNetstring("OK verify"), "", "tlspolicyd_verify", ""},
		{"secure with attributes", d.Addr, "secure.example",
			eximNetstring("OK secure match=nexthop:dot-nexthop protocols=>=TLSv1.2"), "", "tlspolicyd_secure", ""},
		{"none", d.Addr, "none.example", eximNetstring("OK none"), "", "tlspolicyd_none", ""},
		{"may", d.Addr, "may.example", eximNetstring("OK may"), "", "tlspolicyd_may", ""},
		{"dane", d.Addr, "dane.example", eximNetstring("OK dane"), "", "tlspolicyd_dane", ""},
		{"dane-only requires DNSSEC", d.Addr, "dane-only.example", eximNetstring("OK dane-only"), "", "tlspolicyd_dane_only", "*"},
		{"fingerprint is refused", d.Addr, "pinned.example", "", // answer checked by prefix below
			":defer:TLS policy lookup for pinned.example failed: policy \"fingerprint\" is not supported with Exim",
			"tlspolicyd_invalid_answer", ""},
		{"TEMP", stub.Addr, "temp.example", eximNetstring("TEMP boom"),
			":defer:TLS policy lookup for temp.example failed: " + eximNetstring("TEMP boom"), "tlspolicyd_invalid_answer", ""},
		{"TIMEOUT", stub.Addr, "timeout.example", eximNetstring("TIMEOUT slow"),
			":defer:TLS policy lookup for timeout.example failed: " + eximNetstring("TIMEOUT slow"), "tlspolicyd_invalid_answer", ""},
		{"PERM", stub.Addr, "perm.example", eximNetstring("PERM unknown map"),
			":defer:TLS policy lookup for perm.example failed: " + eximNetstring("PERM unknown map"), "tlspolicyd_invalid_answer", ""},
		{"unknown level", stub.Addr, "bogus.example", eximNetstring("OK bogus"),
			":defer:TLS policy lookup for bogus.example failed: " + eximNetstring("OK bogus"), "tlspolicyd_invalid_answer", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			got, err := x.Expand1(ctx, map[string]string{
				"TLSPOLICYD_SOCKETMAP": eximInet(tc.server), "TLSPOLICYD_KEY": tc.key,
			}, "TLSPOLICYD_LOOKUP")
			if err != nil {
				t.Fatalf("lookup of %s: %v", tc.key, err)
			}
			if tc.answer != "" && got != tc.answer {
				t.Fatalf("lookup of %s = %q, want %q", tc.key, got, tc.answer)
			}
			if tc.answer == "" && !strings.Contains(got, ":OK fingerprint match=") {
				t.Fatalf("lookup of %s = %q, want an OK fingerprint answer", tc.key, got)
			}
			exprs := []string{"TLSPOLICYD_CHECK", "TLSPOLICYD_TRANSPORT", "TLSPOLICYD_DNSSEC_DOMAINS"}
			want := []string{tc.check, tc.transport, tc.dnssec}
			vals, errs, err := x.Expand(ctx, map[string]string{"TLSPOLICYD_ANSWER": got, "TLSPOLICYD_KEY": tc.key}, exprs...)
			if err != nil {
				t.Fatal(err)
			}
			for i, expr := range exprs {
				if errs[i] != nil {
					t.Errorf("%s for %q: %v", expr, got, errs[i])
				} else if vals[i] != want[i] {
					t.Errorf("%s for %q = %q, want %q", expr, got, vals[i], want[i])
				}
			}
		})
	}
}

// TestEximOutboundMalformedAnswers checks that every answer that is not a
// well-formed netstring with a known level defers the address (empty reply,
// wrong length, trailing bytes, no framing), and that a server that is down
// or never answers makes the lookup itself fail (which defers the address
// in the router).
func TestEximOutboundMalformedAnswers(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	x := exim.New(t, eximConfig(t, ""))
	tests := []struct {
		name   string
		answer exim.Answer
		check  string // TLSPOLICYD_CHECK result
	}{
		{"close without reply", exim.Answer{}, ":defer:TLS policy lookup for x.example failed: empty reply"},
		{"length too long", exim.Answer{Reply: "99:OK encrypt,"}, ":defer:TLS policy lookup for x.example failed: 99:OK encrypt,"},
		{"length too short", exim.Answer{Reply: "3:OK encrypt,"}, ":defer:TLS policy lookup for x.example failed: 3:OK encrypt,"},
		{"leading zero", exim.Answer{Reply: "010:OK encrypt,"}, ":defer:TLS policy lookup for x.example failed: 010:OK encrypt,"},
		{"bytes after the netstring", exim.Answer{Reply: "10:OK encrypt,x"}, ":defer:TLS policy lookup for x.example failed: 10:OK encrypt,x"},
		{"two netstrings", exim.Answer{Reply: "10:OK encrypt,9:NOTFOUND ,"}, ":defer:TLS policy lookup for x.example failed: 10:OK encrypt,9:NOTFOUND ,"},
		{"no framing", exim.Answer{Reply: "OK encrypt"}, ":defer:TLS policy lookup for x.example failed: OK encrypt"},
		{"empty OK", exim.Answer{Reply: "3:OK ,"}, ":defer:TLS policy lookup for x.example failed: 3:OK ,"},
		{"NOTFOUND without its space", exim.Answer{Reply: "8:NOTFOUND,"}, ":defer:TLS policy lookup for x.example failed: 8:NOTFOUND,"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv := exim.NewScripted(t, exim.Fixed(tc.answer))
			got, err := x.Expand1(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(srv.Addr), "TLSPOLICYD_KEY": "x.example"}, "TLSPOLICYD_LOOKUP")
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			if want := tc.answer.Reply; got != want {
				t.Fatalf("lookup = %q, want the raw reply %q", got, want)
			}
			if reqs := srv.Requests(); len(reqs) != 1 || reqs[0] != "20:tls_policy x.example," {
				t.Errorf("server got %q, want one request %q", reqs, "20:tls_policy x.example,")
			}
			vals, errs, err := x.Expand(ctx, map[string]string{"TLSPOLICYD_ANSWER": got, "TLSPOLICYD_KEY": "x.example"},
				"TLSPOLICYD_CHECK", "TLSPOLICYD_TRANSPORT")
			if err != nil {
				t.Fatal(err)
			}
			if errs[0] != nil || vals[0] != tc.check {
				t.Errorf("TLSPOLICYD_CHECK = %q, %v; want %q", vals[0], errs[0], tc.check)
			}
			if errs[1] != nil || vals[1] != "tlspolicyd_invalid_answer" {
				t.Errorf("TLSPOLICYD_TRANSPORT = %q, %v; want tlspolicyd_invalid_answer (no such transport: the router defers)", vals[1], errs[1])
			}
		})
	}

	t.Run("server down", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := x.Expand1(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(eximClosedAddr(t))}, "TLSPOLICYD_LOOKUP")
		var ee *exim.ExpandError
		if !errors.As(err, &ee) || !strings.Contains(ee.Message, "Connection refused") {
			t.Fatalf("lookup with the server down: %v; want a failed expansion (connection refused)", err)
		}
	})
	t.Run("server never answers", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv := exim.NewScripted(t, exim.Fixed(exim.Answer{Hang: true}))
		start := time.Now()
		_, err := x.Expand1(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(srv.Addr), "TLSPOLICYD_TIMEOUT": "1s"}, "TLSPOLICYD_LOOKUP")
		var ee *exim.ExpandError
		if !errors.As(err, &ee) || !strings.Contains(ee.Message, "timed out") {
			t.Fatalf("lookup against a silent server: %v; want a failed expansion (timed out)", err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("timeout took %v, want about TLSPOLICYD_TIMEOUT (1s)", el)
		}
	})
}

// TestEximOutboundRouting routes addresses with exim -bt through the
// example's tlspolicyd_lookup router and a remote router using
// TLSPOLICYD_TRANSPORT: what the table enforces gets its level's transport,
// the rest the default one, and every lookup problem defers the address
// before any transport is chosen.
func TestEximOutboundRouting(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	d, _ := eximDaemon(t, eximOtherFingerprint)
	stub := harness.NewStubSocketmap(t, map[string]string{
		"tls_policy temp.example": "TEMP boom",
		"tls_policy perm.example": "PERM unknown map",
	})
	empty := exim.NewScripted(t, exim.Fixed(exim.Answer{}))
	newline := exim.NewScripted(t, exim.Fixed(exim.Answer{Reply: "11:OK encrypt\n,"}))
	x := exim.New(t, eximConfig(t, ""))
	down := eximClosedAddr(t)

	routed := func(tr string) string { return "router = remote_mx, transport = " + tr }
	deferred := "cannot be resolved at this time: "
	tests := []struct {
		name, server, addr string
		code               int
		want               string
	}{
		{"enforced", d.Addr, "user@bank.example", 0, routed("tlspolicyd_encrypt")},
		{"parent entry, mixed case", d.Addr, "user@Mail.Sub.BANK.example", 0, routed("tlspolicyd_encrypt")},
		{"unlisted", d.Addr, "user@open.example", 0, routed("remote_smtp")},
		{"verify", d.Addr, "user@verify.example", 0, routed("tlspolicyd_verify")},
		{"secure", d.Addr, "user@secure.example", 0, routed("tlspolicyd_secure")},
		{"none", d.Addr, "user@none.example", 0, routed("tlspolicyd_none")},
		{"dane-only", d.Addr, "user@dane-only.example", 0, routed("tlspolicyd_dane_only")},
		{"fingerprint", d.Addr, "user@pinned.example", 1,
			deferred + `TLS policy lookup for pinned.example failed: policy "fingerprint" is not supported with Exim`},
		{"TEMP", stub.Addr, "user@temp.example", 1, deferred + "TLS policy lookup for temp.example failed: " + eximNetstring("TEMP boom")},
		{"PERM", stub.Addr, "user@perm.example", 1, deferred + "TLS policy lookup for perm.example failed: " + eximNetstring("PERM unknown map")},
		{"empty reply", empty.Addr, "user@bank.example", 1, deferred + "TLS policy lookup for bank.example failed: empty reply"},
		{"newline in the reply", newline.Addr, "user@bank.example", 1,
			deferred + "TLS policy lookup for bank.example failed: 11:OK encrypt ,"},
		{"answer replaced before the remote router", d.Addr, "user@replaced.example", 1,
			deferred + `transport "tlspolicyd_invalid_answer" not found in remote_mx router`},
		{"daemon down", down, "user@bank.example", 1,
			deferred + `expansion of "${readsocket{inet:` + down + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, code, err := x.Route(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(tc.server)}, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exim -bt %s: exit %d, output %q; want exit %d and %q", tc.addr, code, out, tc.code, tc.want)
			}
			if tc.name == "daemon down" && !strings.Contains(out, "Connection refused") {
				t.Errorf("exim -bt %s: %q does not say why (connection refused)", tc.addr, out)
			}
		})
	}

	t.Run("verification does not ask", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rec := harness.NewStubSocketmap(t, nil)
		res, err := x.Run(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(rec.Addr)}, "", "-bv", "user@bank.example")
		if err != nil {
			t.Fatal(err)
		}
		if res.Code != 0 || !strings.Contains(res.Stdout, "user@bank.example verified") {
			t.Errorf("exim -bv: %s; want verified (the lookup router has no_verify)", res)
		}
		if got := rec.Requests(); len(got) != 0 {
			t.Errorf("verification asked the socketmap: %q", got)
		}
	})

	t.Run("one lower-cased key per address, no parent walk", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rec := harness.NewStubSocketmap(t, nil)
		out, code, err := x.Route(ctx, map[string]string{"TLSPOLICYD_SOCKETMAP": eximInet(rec.Addr)}, "user@A.B.MiXeD.Example")
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 || !strings.Contains(out, routed("remote_smtp")) {
			t.Errorf("exim -bt: exit %d, %q; want NOTFOUND routed to remote_smtp", code, out)
		}
		if got := rec.Requests(); len(got) != 1 || got[0] != "tls_policy a.b.mixed.example" {
			t.Errorf("socketmap requests %q, want exactly [\"tls_policy a.b.mixed.example\"]", got)
		}
	})
}

// eximSession is an SMTP session for exim -bh: one message from sender to rcpt,
// with a body when data is set.
func eximSession(sender, rcpt string, data bool) []string {
	lines := []string{"EHLO client.example", "MAIL FROM:<" + sender + ">", "RCPT TO:<" + rcpt + ">"}
	if data {
		lines = append(lines, "DATA", "Subject: test", "", "body", ".")
	}
	return append(lines, "QUIT")
}

// eximRcptReply returns the reply to the (only) RCPT of a eximSession() transcript:
// greeting, EHLO, MAIL, RCPT.
func eximRcptReply(t *testing.T, s *exim.Session) exim.Reply {
	t.Helper()
	if len(s.Replies) < 4 || s.Replies[1].Code != 250 || s.Replies[2].Code != 250 {
		t.Fatalf("session did not get to RCPT: %s", s.Raw)
	}
	return s.Replies[3]
}

// TestEximInboundPolicy drives SMTP sessions through the RCPT ACL of
// examples/exim/acl.conf with exim -bh, against the daemon's policy
// listener (and scripted servers for the answers it never gives): enforced
// rules defer or reject with the daemon's text, testing rules add their
// header, and anything but a valid answer defers (fail closed).
func TestEximInboundPolicy(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	_, policy := eximDaemon(t, eximOtherFingerprint)
	x := exim.New(t, eximConfig(t, ""))
	down := eximClosedAddr(t)
	scripted := func(reply string) string {
		return exim.NewScripted(t, exim.Fixed(exim.Answer{Reply: reply})).Addr
	}
	unavailable := "451 4.3.0 TLS policy service unavailable, try again later"

	tests := []struct {
		name    string
		server  string // policy server address
		client  string // client IP (never in the empty hosts file: no DNS)
		extra   []string
		sender  string
		rcpt    string
		data    bool
		code    int
		text    []string // substrings of the RCPT reply
		log     []string // substrings of some logged line
		timeout string   // TLSPOLICYD_PD_TIMEOUT
	}{
		{name: "enforced sender without TLS is deferred", server: policy, client: "198.51.100.7",
			sender: "alice@bank.example", rcpt: "bob@ourcorp.example", code: 450,
			text: []string{"4.7.10 TLS 1.2 or newer is required for mail from bank.example", "rule bank-partners"},
			log:  []string{"temporarily rejected RCPT <bob@ourcorp.example>: tlspolicyd: 450 4.7.10 TLS 1.2"}},
		{name: "subdomain of an enforced sender", server: policy, client: "198.51.100.7",
			sender: "alice@mail.bank.example", rcpt: "bob@ourcorp.example", code: 450, text: []string{"4.7.10"}},
		{name: "unrelated sender is accepted", server: policy, client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 250, text: []string{"Accepted"}},
		{name: "null sender is accepted", server: policy, client: "198.51.100.7",
			sender: "", rcpt: "bob@ourcorp.example", code: 250},
		{name: "reject rule for a recipient", server: policy, client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "legal@ourcorp.example", code: 550,
			text: []string{"5.7.10 TLS is required for mail to legal@ourcorp.example"},
			log:  []string{"rejected RCPT <legal@ourcorp.example>: tlspolicyd: 550 5.7.10"}},
		{name: "verified client name matches a client rule", server: policy, client: "198.51.100.8",
			extra: []string{"-oMs", "mx.partner.example"}, sender: "carol@open.example", rcpt: "bob@ourcorp.example",
			code: 450, text: []string{"rule partner-mx"}},
		{name: "testing rule adds its header", server: policy, client: "192.0.2.10",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", data: true, code: 250,
			log: []string{"|X-TLS-Policy: would defer (rule pilot)"}},
		{name: "daemon down defers", server: down, client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451, text: []string{unavailable[4:]},
			log: []string{"tlspolicyd: no valid answer from inet:" + down + ": no reply"}},
		{name: "silent server defers after the timeout", server: exim.NewScripted(t, exim.Fixed(exim.Answer{Hang: true})).Addr,
			timeout: "1s", client: "198.51.100.7", sender: "carol@open.example", rcpt: "bob@ourcorp.example",
			code: 451, text: []string{unavailable[4:]}},
		{name: "close without reply defers", server: scripted(""), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451, text: []string{unavailable[4:]}},
		{name: "garbage defers", server: scripted("hello\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451, text: []string{unavailable[4:]},
			log: []string{"tlspolicyd: no valid answer from inet:", ": hello||"}},
		{name: "answer without the empty line defers", server: scripted("action=DUNNO\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451, text: []string{unavailable[4:]}},
		{name: "two answers defer", server: scripted("action=DUNNO\naction=DUNNO\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451, text: []string{unavailable[4:]}},
		{name: "unknown action defers", server: scripted("action=HOLD\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 451,
			text: []string{"4.3.0 TLS policy service misconfigured"}},
		{name: "OK is no accept, just no objection", server: scripted("action=OK\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 250},
		{name: "WARN is logged, no objection", server: scripted("action=WARN look here\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 250, log: []string{"tlspolicyd: WARN look here"}},
		{name: "DEFER_IF_PERMIT", server: scripted("action=DEFER_IF_PERMIT try later\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 450, text: []string{"4.7.1 try later"}},
		{name: "REJECT", server: scripted("action=REJECT go away\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", code: 550, text: []string{"5.7.1 go away"}},
		{name: "PREPEND from any server", server: scripted("action=PREPEND X-Test: yes\n\n"), client: "198.51.100.7",
			sender: "carol@open.example", rcpt: "bob@ourcorp.example", data: true, code: 250, log: []string{"|X-Test: yes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			defines := map[string]string{"TLSPOLICYD_POLICY": eximInet(tc.server)}
			if tc.timeout != "" {
				defines["TLSPOLICYD_PD_TIMEOUT"] = tc.timeout
			}
			s, err := x.HostCheck(ctx, defines, tc.client, eximSession(tc.sender, tc.rcpt, tc.data), tc.extra...)
			if err != nil {
				t.Fatal(err)
			}
			r := eximRcptReply(t, s)
			if r.Code != tc.code {
				t.Fatalf("RCPT reply %q, want code %d\n%s", r, tc.code, s.Raw)
			}
			for _, want := range tc.text {
				if !strings.Contains(r.Text(), want) {
					t.Errorf("RCPT reply %q lacks %q", r, want)
				}
			}
			logged := strings.Join(s.Log, "\n")
			for _, want := range tc.log {
				if !strings.Contains(logged, want) {
					t.Errorf("log lacks %q:\n%s", want, logged)
				}
			}
			if tc.data {
				if n := len(s.Replies); n < 6 || s.Replies[n-2].Code != 250 {
					t.Errorf("message not accepted after DATA: %s", s.Raw)
				}
			}
		})
	}
}

// eximPolicyAttrs is the attribute order of the request acl.conf sends.
var eximPolicyAttrs = []string{
	"request", "protocol_state", "protocol_name", "client_address", "client_name", "client_port",
	"server_address", "server_port", "helo_name", "sender", "recipient", "recipient_count", "instance",
	"sasl_username", "ccert_subject", "ccert_issuer", "ccert_fingerprint", "encryption_protocol",
	"encryption_cipher", "encryption_keysize",
}

// eximParseRequest splits a recorded policy request into its attributes,
// failing t unless it is one request: name=value lines in eximPolicyAttrs
// order, each name once, then one empty line.
func eximParseRequest(t *testing.T, req string) map[string]string {
	t.Helper()
	body, ok := strings.CutSuffix(req, "\n\n")
	if !ok || strings.Contains(body, "\n\n") || strings.Contains(body, "\r") {
		t.Fatalf("not one request ending with an empty line: %q", req)
	}
	lines := strings.Split(body, "\n")
	if len(lines) != len(eximPolicyAttrs) {
		t.Fatalf("request has %d lines, want %d: %q", len(lines), len(eximPolicyAttrs), req)
	}
	attrs := map[string]string{}
	for i, l := range lines {
		name, value, ok := strings.Cut(l, "=")
		if !ok || name != eximPolicyAttrs[i] {
			t.Fatalf("line %d is %q, want attribute %s: %q", i+1, l, eximPolicyAttrs[i], req)
		}
		attrs[name] = value
	}
	return attrs
}

// TestEximInboundRequest records the requests acl.conf sends: the attributes
// and values of a plain session, and that a CR in a quoted local part or an
// LF in a client name never starts a new attribute line.
func TestEximInboundRequest(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	x := exim.New(t, eximConfig(t, ""))

	t.Run("attributes", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rec := exim.NewScripted(t, exim.Fixed(exim.Answer{Reply: "action=DUNNO\n\n"}))
		s, err := x.HostCheck(ctx, map[string]string{"TLSPOLICYD_POLICY": eximInet(rec.Addr)}, "198.51.100.7",
			[]string{"EHLO client.example", "MAIL FROM:<alice@bank.example>", "RCPT TO:<bob@ourcorp.example>",
				"RCPT TO:<carol@ourcorp.example>", "RSET", "MAIL FROM:<>", "RCPT TO:<bob@ourcorp.example>", "QUIT"},
			"-oMs", "mx.partner.example")
		if err != nil {
			t.Fatal(err)
		}
		if r := eximRcptReply(t, s); r.Code != 250 {
			t.Fatalf("RCPT: %q", r)
		}
		reqs := rec.Requests()
		if len(reqs) != 3 {
			t.Fatalf("got %d requests, want one per RCPT (3): %q", len(reqs), reqs)
		}
		first := eximParseRequest(t, reqs[0])
		want := map[string]string{
			"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
			"client_address": "198.51.100.7", "client_name": "mx.partner.example", "client_port": "40000",
			"server_address": "127.0.0.1", "server_port": "25", "helo_name": "client.example",
			"sender": "alice@bank.example", "recipient": "bob@ourcorp.example", "recipient_count": "0",
			"sasl_username": "", "ccert_subject": "", "ccert_issuer": "", "ccert_fingerprint": "",
			"encryption_protocol": "", "encryption_cipher": "", "encryption_keysize": "0",
		}
		for k, v := range want {
			if first[k] != v {
				t.Errorf("%s=%q, want %q", k, first[k], v)
			}
		}
		if !regexp.MustCompile(`^[0-9]+\.[0-9]+$`).MatchString(first["instance"]) {
			t.Errorf("instance=%q, want pid.time", first["instance"])
		}
		second := eximParseRequest(t, reqs[1])
		if second["recipient"] != "carol@ourcorp.example" || second["recipient_count"] != "1" {
			t.Errorf("second RCPT: recipient=%q recipient_count=%q", second["recipient"], second["recipient_count"])
		}
		if second["instance"] != first["instance"] {
			t.Errorf("instance changed within one message: %q, %q", first["instance"], second["instance"])
		}
		third := eximParseRequest(t, reqs[2])
		if third["sender"] != "" {
			t.Errorf("null sender sent as sender=%q, want empty", third["sender"])
		}
		if third["instance"] == first["instance"] {
			t.Errorf("second message has the first one's instance %q", third["instance"])
		}
	})

	injections := []struct {
		name   string
		client string
		extra  []string
		lines  []string
		attr   string // the attribute that carries the attempt
		value  string // what it must arrive as
	}{
		{name: "CR in the sender", client: "198.51.100.7",
			lines: []string{"EHLO client.example", "MAIL FROM:<\"a\rsender=carol@open.example\"@bank.example>",
				"RCPT TO:<bob@ourcorp.example>", "QUIT"},
			attr: "sender", value: `"a sender=carol@open.example"@bank.example`},
		{name: "CR in the recipient", client: "198.51.100.7",
			lines: []string{"EHLO client.example", "MAIL FROM:<carol@open.example>",
				"RCPT TO:<\"b\rrecipient=legal@ourcorp.example\rencryption_protocol=TLSv1.3\"@ourcorp.example>", "QUIT"},
			// (Exim lower-cases the local part in the RCPT ACL.)
			attr: "recipient", value: "b recipient=legal@ourcorp.example encryption_protocol=tlsv1.3@ourcorp.example"},
		{name: "LF in the client name", client: "198.51.100.7", extra: []string{"-oMs", "evil.example\nclient_address=192.0.2.1"},
			lines: []string{"EHLO client.example", "MAIL FROM:<carol@open.example>", "RCPT TO:<bob@ourcorp.example>", "QUIT"},
			attr:  "client_name", value: "evil.example client_address=192.0.2.1"},
	}
	for _, tc := range injections {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rec := exim.NewScripted(t, exim.Fixed(exim.Answer{Reply: "action=DUNNO\n\n"}))
			s, err := x.HostCheck(ctx, map[string]string{"TLSPOLICYD_POLICY": eximInet(rec.Addr)}, tc.client, tc.lines, tc.extra...)
			if err != nil {
				t.Fatal(err)
			}
			if r := eximRcptReply(t, s); r.Code != 250 {
				t.Fatalf("RCPT: %q (the SMTP side must accept the address for the test to mean anything)\n%s", r, s.Raw)
			}
			reqs := rec.Requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1: %q", len(reqs), reqs)
			}
			attrs := eximParseRequest(t, reqs[0]) // also: no extra line, no repeated name
			if attrs[tc.attr] != tc.value {
				t.Errorf("%s=%q, want %q", tc.attr, attrs[tc.attr], tc.value)
			}
		})
	}
}

// TestEximInboundInjectionAgainstDaemon sends the injection attempts to
// the daemon itself: the sanitised sender still names bank.example, so its
// rule applies (450), rather than an injected second sender= line making
// the daemon drop the connection (451) or deciding for another domain.
func TestEximInboundInjectionAgainstDaemon(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	_, policy := eximDaemon(t, eximOtherFingerprint)
	x := exim.New(t, eximConfig(t, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := x.HostCheck(ctx, map[string]string{"TLSPOLICYD_POLICY": eximInet(policy)}, "198.51.100.7",
		[]string{"EHLO client.example", "MAIL FROM:<\"a\rsender=carol@open.example\"@bank.example>",
			"RCPT TO:<bob@ourcorp.example>", "QUIT"})
	if err != nil {
		t.Fatal(err)
	}
	if r := eximRcptReply(t, s); r.Code != 450 || !strings.Contains(r.Text(), "bank.example") {
		t.Errorf("RCPT after a sender with an injection attempt: %q, want the bank-partners 450", r)
	}
}

// TestEximInboundTLS runs a real Exim daemon (exim -bdf) with STARTTLS and
// client-certificate requests, and SMTP clients with and without TLS,
// TLS 1.2 and 1.3, and with the pinned or another client certificate: the
// values acl.conf maps from Exim's TLS variables (encryption_protocol,
// ccert_fingerprint) must be what the daemon's rules understand.
func TestEximInboundTLS(t *testing.T) {
	exim.Require(t)
	t.Parallel()
	certDir, err := os.MkdirTemp("", "tlspolicyd-exim-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(certDir) })
	if err := os.Chmod(certDir, 0o755); err != nil { // the exim user reads the key
		t.Fatal(err)
	}
	pki := exim.NewPKI(t, certDir)
	pinned := pki.Client(t, "client.pinned.example")
	other := pki.Client(t, "client.other.example")

	_, policy := eximDaemon(t, exim.Fingerprint(pinned))
	rec := exim.NewScripted(t, exim.Forward(policy)) // records what Exim sends, the daemon answers
	x := exim.New(t, eximConfig(t, `local_interfaces = 127.0.0.1
tls_advertise_hosts = *
tls_certificate = `+pki.CertFile+`
tls_privatekey = `+pki.KeyFile+`
tls_verify_certificates = `+pki.CAFile+`
tls_try_verify_hosts = *
`))
	port := harness.FreePort(t, "127.0.0.1")
	mta := x.StartDaemon(t, map[string]string{"TLSPOLICYD_POLICY": eximInet(rec.Addr)}, port)

	tls12, tls13 := uint16(tls.VersionTLS12), uint16(tls.VersionTLS13)
	tests := []struct {
		name   string
		tls    uint16 // 0: no STARTTLS
		cert   *tls.Certificate
		sender string
		code   int
		proto  string // expected encryption_protocol
		fp     string // expected ccert_fingerprint
	}{
		{"tls1.2 rule, no TLS", 0, nil, "alice@bank.example", 450, "", ""},
		{"tls1.2 rule, TLS 1.2", tls12, nil, "alice@bank.example", 250, "TLSv1.2", ""},
		{"tls1.2 rule, TLS 1.3", tls13, nil, "alice@bank.example", 250, "TLSv1.3", ""},
		{"tls1.3 rule, TLS 1.2", tls12, nil, "dave@modern.example", 450, "TLSv1.2", ""},
		{"tls1.3 rule, TLS 1.3", tls13, nil, "dave@modern.example", 250, "TLSv1.3", ""},
		{"fingerprint rule, pinned certificate", tls13, &pinned, "erin@pinned.example", 250, "TLSv1.3", exim.Fingerprint(pinned)},
		{"fingerprint rule, pinned certificate, TLS 1.2", tls12, &pinned, "erin@pinned.example", 250, "TLSv1.2", exim.Fingerprint(pinned)},
		{"fingerprint rule, other certificate", tls13, &other, "erin@pinned.example", 450, "TLSv1.3", exim.Fingerprint(other)},
		{"fingerprint rule, no certificate", tls13, nil, "erin@pinned.example", 450, "TLSv1.3", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Sequential: the recorded request is the last one.
			before := len(rec.Requests())
			code, msg := eximSMTPRcpt(t, mta.Addr, tc.tls, tc.cert, tc.sender, "bob@ourcorp.example")
			if code != tc.code {
				t.Errorf("RCPT: %d %s, want %d", code, msg, tc.code)
			}
			reqs := rec.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("policy requests: %d new, want 1", len(reqs)-before)
			}
			attrs := eximParseRequest(t, reqs[len(reqs)-1])
			if attrs["encryption_protocol"] != tc.proto {
				t.Errorf("encryption_protocol=%q, want %q", attrs["encryption_protocol"], tc.proto)
			}
			if attrs["ccert_fingerprint"] != tc.fp {
				t.Errorf("ccert_fingerprint=%q, want %q", attrs["ccert_fingerprint"], tc.fp)
			}
			switch {
			case tc.tls == 0:
				if attrs["encryption_cipher"] != "" || attrs["encryption_keysize"] != "0" {
					t.Errorf("plain session: encryption_cipher=%q encryption_keysize=%q", attrs["encryption_cipher"], attrs["encryption_keysize"])
				}
			case !strings.HasPrefix(attrs["encryption_cipher"], "TLS_"):
				t.Errorf("encryption_cipher=%q, want an IANA name (TLS_...)", attrs["encryption_cipher"])
			}
			if tc.cert != nil {
				// Both client certificates are signed by the CA Exim trusts.
				if attrs["ccert_subject"] != tc.cert.Leaf.Subject.CommonName || attrs["ccert_issuer"] != "tlspolicyd test CA" {
					t.Errorf("ccert_subject=%q ccert_issuer=%q", attrs["ccert_subject"], attrs["ccert_issuer"])
				}
			}
		})
	}
}

// eximSMTPRcpt connects to addr, optionally starts TLS with version v and client
// certificate cert, and returns the reply code and text to RCPT TO:<rcpt>
// after MAIL FROM:<sender>.
func eximSMTPRcpt(t *testing.T, addr string, v uint16, cert *tls.Certificate, sender, rcpt string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to exim: %v", err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var c *smtp.Client
	if v == 0 {
		c = smtp.NewClient(conn)
	} else {
		cfg := &tls.Config{MinVersion: v, MaxVersion: v, ServerName: "mx.ourcorp.example", InsecureSkipVerify: true} //nolint:gosec // test server
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		if c, err = smtp.NewClientStartTLS(conn, cfg); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if err := c.Mail(sender, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	err = c.Rcpt(rcpt, nil)
	_ = c.Quit()
	if err == nil {
		return 250, ""
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("RCPT: %v", err)
	}
	return se.Code, se.Message
}
