package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/fault"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// Fault injection (the daemon fails closed): whatever goes wrong while the
// engine resolves — an error, a panic, a hang, no table — real servers in
// front of it answer TEMP (socketmap) and "450 4.7.10 …" (policy
// delegation) over loopback sockets; never NOTFOUND, DUNNO or a weaker
// policy than the table's.

// faultTable enforces TLS for bank.example both ways, learns from the
// probe cache and has a weak default: a failure must not fall through to
// any of these.
const faultTable = `
defaults:
  outbound: may
  learn: enforce
outbound:
  bank.example: secure match=nexthop:dot-nexthop
  .bank.example: encrypt
inbound:
  - name: bank-partners
    from: [bank.example, .bank.example]
    require: tls1.2
    action: defer
`

// faultRequestTimeout is the servers' RequestTimeout: a hang is answered
// after it.
const faultRequestTimeout = 300 * time.Millisecond

// faultLearner is the probe cache: learned.example has STARTTLS. It fails
// the way it is told to (mode "panic" or "hang") for that domain.
type faultLearner struct {
	mode    string
	release chan struct{}
}

func (l *faultLearner) Learned(domain string) (string, string, bool) {
	if domain != "learned.example" {
		return "", "", false
	}
	switch l.mode {
	case "panic":
		panic("probe cache corrupted")
	case "hang":
		<-l.release
	}
	return "encrypt", "every MX offered STARTTLS", true
}

// handler is what the servers call: an Engine, or one wrapped in a
// fault.Handler.
type handler interface {
	socketmap.Handler
	policyd.Handler
}

// withFault wraps e so that f runs before every request (fault.Handler,
// which the end-to-end tests' daemon uses too).
func withFault(e *Engine, f func() error) handler {
	return &fault.Handler{Socketmap: e, Policyd: e, Fault: func(context.Context, string, string) error { return f() }}
}

// frontEnds serves e with a socketmap and a policyd server on loopback and
// returns their addresses.
func frontEnds(t *testing.T, e handler) (smAddr, pdAddr string) {
	t.Helper()
	sm := &socketmap.Server{Handler: e, RequestTimeout: faultRequestTimeout, Logger: quietLogger()}
	pd := &policyd.Server{Handler: e, RequestTimeout: faultRequestTimeout, Logger: quietLogger()}
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = sm.Serve(l1) }()
	go func() { defer wg.Done(); _ = pd.Serve(l2) }()
	t.Cleanup(func() {
		// A hung Handler keeps its connection busy: do not wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = sm.Shutdown(ctx)
		_ = pd.Shutdown(ctx)
		wg.Wait()
	})
	return l1.Addr().String(), l2.Addr().String()
}

// smLookup asks the socketmap server, on a new connection as a Postfix
// smtp process would after a failure.
func smLookup(t *testing.T, addr, key string) socketmap.Reply {
	t.Helper()
	ctx := context.Background()
	c, err := socketmap.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Lookup(ctx, "tls_policy", key)
	if err != nil {
		t.Fatalf("lookup %s: %v", key, err)
	}
	return r
}

// pdCheck sends a recorded Postfix request to the policy server on a new
// connection and returns the action.
func pdCheck(t *testing.T, addr, fixtureName string, overrides ...string) string {
	t.Helper()
	b, err := policyd.AppendRequest(nil, fixture(t, fixtureName, overrides...))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading policy reply: %v", err)
	}
	if empty, err := br.ReadString('\n'); err != nil || empty != "\n" {
		t.Fatalf("policy reply %q not ended by an empty line (%v)", line, err)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		t.Fatalf("policy reply %q", line)
	}
	return action
}

// outboundKeys are the keys asked in every case, with the answer the table
// gives when nothing fails.
var outboundKeys = []struct{ key, healthy string }{
	{"bank.example", "OK secure match=nexthop:dot-nexthop"},
	{"BANK.Example", "OK secure match=nexthop:dot-nexthop"},
	{"mx.bank.example", "OK encrypt"},
	{".bank.example", "OK encrypt"},
	{"learned.example", "OK encrypt"},
	{"unlisted.example", "OK may"},
}

// inboundCases are the policy requests asked in every case, with the
// answer when nothing fails.
var inboundCases = []struct {
	name, fixture string
	overrides     []string
	healthy       string // prefix
}{
	{"bank.example without TLS", plain, nil, "450 4.7.10 TLS 1.2 or newer is required for mail from bank.example"},
	{"bank.example over TLS 1.3", tls13, nil, "DUNNO"},
	{"unlisted sender", tls13, []string{"sender=someone@unlisted.example"}, "DUNNO"},
}

func reply(r socketmap.Reply) string { return r.Status.String() + " " + r.Data }

func TestFaultsFailClosed(t *testing.T) {
	errStore := errors.New("policy store unavailable")
	tests := []struct {
		name   string
		engine func(t *testing.T) handler
	}{
		{"resolution error", func(t *testing.T) handler {
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			return withFault(e, func() error { return errStore })
		}},
		{"resolution panics", func(t *testing.T) handler {
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			return withFault(e, func() error { panic("resolver bug") })
		}},
		{"resolution hangs", func(t *testing.T) handler {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			return withFault(e, func() error { <-release; return nil })
		}},
		{"no table loaded", func(t *testing.T) handler {
			return New(nil, &faultLearner{}, nil, quietLogger())
		}},
	}

	// The healthy engine answers what the table says: the baseline the
	// faults must never fall back to.
	t.Run("healthy", func(t *testing.T) {
		sm, pd := frontEnds(t, New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger()))
		for _, k := range outboundKeys {
			if got := reply(smLookup(t, sm, k.key)); got != k.healthy {
				t.Errorf("%s: %q, want %q", k.key, got, k.healthy)
			}
		}
		for _, c := range inboundCases {
			if got := pdCheck(t, pd, c.fixture, c.overrides...); !strings.HasPrefix(got, c.healthy) {
				t.Errorf("%s: %q, want %q…", c.name, got, c.healthy)
			}
		}
	})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm, pd := frontEnds(t, tt.engine(t))
			for _, k := range outboundKeys {
				start := time.Now()
				r := smLookup(t, sm, k.key)
				if r.Status != socketmap.StatusTemp || r.Data == "" {
					t.Errorf("%s: %q, want TEMP <reason> (healthy answer %q)", k.key, reply(r), k.healthy)
				}
				if el := time.Since(start); el > faultRequestTimeout+2*time.Second {
					t.Errorf("%s: answered after %v", k.key, el)
				}
			}
			for _, c := range inboundCases {
				start := time.Now()
				got := pdCheck(t, pd, c.fixture, c.overrides...)
				if got != policyd.DefaultDeferText {
					t.Errorf("%s: %q, want %q (healthy answer %q)", c.name, got, policyd.DefaultDeferText, c.healthy)
				}
				if el := time.Since(start); el > faultRequestTimeout+2*time.Second {
					t.Errorf("%s: answered after %v", c.name, el)
				}
			}
		})
	}
}

// TestLearnerFaultsFailClosed: the probe cache is consulted during
// resolution for unlisted domains (learn: enforce). If it panics or hangs,
// the learned domain gets TEMP, never NOTFOUND or the weaker default, and
// listed domains keep their answers.
func TestLearnerFaultsFailClosed(t *testing.T) {
	for _, mode := range []string{"panic", "hang"} {
		t.Run(mode, func(t *testing.T) {
			l := &faultLearner{mode: mode, release: make(chan struct{})}
			t.Cleanup(func() { close(l.release) })
			sm, _ := frontEnds(t, New(buildStore(t, faultTable), l, nil, quietLogger()))
			if r := smLookup(t, sm, "learned.example"); r.Status != socketmap.StatusTemp {
				t.Errorf("learned.example: %q, want TEMP (healthy answer OK encrypt)", reply(r))
			}
			if got := reply(smLookup(t, sm, "bank.example")); got != "OK secure match=nexthop:dot-nexthop" {
				t.Errorf("bank.example: %q", got)
			}
		})
	}
}

// hostileTable has an enforced rule an internet client can trigger at
// will (mail to legal@) and a testing rule with a header.
const hostileTable = `
defaults:
  outbound: may
outbound:
  bank.example: encrypt
inbound:
  - name: legal-inbox
    to: [legal@ourcorp.example]
    require: tls
    action: reject
  - name: pilot
    from: [.evil.example]
    require: tls1.3
    testing: true
    header: X-TLS-Policy
`

// printableASCII reports whether s holds only printable ASCII.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// TestHostileRequestFields: the fields an SMTP client controls (sender,
// recipient, HELO, client name via its PTR record) cannot inject a second
// action or attribute into a policy reply, control bytes into events, or
// line breaks into the log; and socketmap keys cannot shape an OK answer.
func TestHostileRequestFields(t *testing.T) {
	var logs logLines
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := New(buildStore(t, hostileTable), nil, events.NewRing(100), log)
	sm := &socketmap.Server{Handler: e, Logger: log}
	pd := &policyd.Server{Handler: e, Logger: log}
	smAddr, pdAddr := serveBoth(t, sm, pd)

	long := strings.Repeat("a", 7000)
	requests := []struct {
		name      string
		overrides []string
		action    string // prefix
	}{
		{"CR and fake attribute in sender", []string{"sender=x@evil.example\raction=OK", "recipient=legal@ourcorp.example"}, "550 5.7.10 "},
		{"NUL in sender", []string{"sender=x@ev\x00il.example", "recipient=legal@ourcorp.example"}, "550 5.7.10 "},
		{"escape sequences in HELO and client name", []string{"helo_name=\x1b[2J\x1b]0;x\x07", "client_name=mx\x1b[31m.evil.example\r", "recipient=legal@ourcorp.example"}, "550 5.7.10 "},
		{"CR in recipient", []string{"recipient=legal@ourcorp.example\r\x00"}, "DUNNO"},
		{"huge sender domain", []string{"sender=x@" + long + ".evil.example", "recipient=legal@ourcorp.example"}, "550 5.7.10 "},
		{"testing header with hostile sender", []string{"sender=p@x\x1b.evil.example", "encryption_protocol=TLSv1.2"}, "PREPEND X-TLS-Policy: would defer (rule pilot)"},
	}
	for _, r := range requests {
		raw := rawRequest(t, fixture(t, plain, r.overrides...))
		reply := exchange(t, pdAddr, raw)
		lines := strings.Split(reply, "\n")
		if len(lines) != 3 || lines[1] != "" || lines[2] != "" || !strings.HasPrefix(lines[0], "action="+r.action) {
			t.Errorf("%s: reply %q, want one action line %q…", r.name, reply, r.action)
			continue
		}
		if !printableASCII(lines[0]) {
			t.Errorf("%s: reply line %q holds control bytes", r.name, lines[0])
		}
		if len(lines[0]) > 1024 {
			t.Errorf("%s: reply line of %d bytes", r.name, len(lines[0]))
		}
	}
	for _, ev := range e.Events().Recent(0) {
		for name, v := range map[string]string{"domain": ev.Domain, "sender": ev.Sender, "client": ev.Client, "reason": ev.Reason} {
			if !printableASCII(v) || len(v) > 256 {
				t.Errorf("event %s %q: control bytes or too long", name, v)
			}
		}
	}
	// 4 blocked; 2 would-block (the huge sender domain is under
	// .evil.example too).
	if n := len(e.Events().Recent(0)); n != 6 {
		t.Errorf("%d events, want 6", n)
	}

	for _, key := range []string{"bank.example\r\nOK none", "bank.example\x00", "x\x1b[2J.example", "5:OK x,"} {
		r := smLookup(t, smAddr, key)
		if r.Status == socketmap.StatusOK && r.Data != "may" {
			t.Errorf("key %q answered %q", key, reply(r))
		}
	}
	if got := reply(smLookup(t, smAddr, "BANK.example")); got != "OK encrypt" {
		t.Errorf("bank.example after hostile keys: %q", got)
	}
	logs.check(t)
}

// TestSenderDomainFlood: counters for sender domains seen from the
// internet stay bounded however many distinct domains arrive.
func TestSenderDomainFlood(t *testing.T) {
	e := New(buildStore(t, hostileTable), nil, nil, quietLogger())
	ctx := context.Background()
	req := fixture(t, plain)
	for i := range 25000 {
		req.Set("sender", fmt.Sprintf("x@d%d.example", i))
		req.Set("instance", strconv.Itoa(i))
		if _, err := e.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	snap := e.Stats().Snapshot()
	if len(snap) > 10001 {
		t.Errorf("%d sender domains counted, want at most 10000 and (other)", len(snap))
	}
	var total uint64
	for _, d := range snap {
		total += d.WithoutTLS
	}
	if total != 25000 {
		t.Errorf("%d messages counted, want 25000", total)
	}
}

// logLines collects log output and checks that every record is one line.
type logLines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.buf.String()
	if out == "" {
		t.Fatal("nothing logged")
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "time=") || strings.ContainsAny(line, "\r\x00\x1b") {
			t.Errorf("log line not a single clean record: %q", line)
		}
	}
}

// serveBoth serves the two servers on loopback until the test ends.
func serveBoth(t *testing.T, sm *socketmap.Server, pd *policyd.Server) (smAddr, pdAddr string) {
	t.Helper()
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sm.Serve(l1)
	go pd.Serve(l2)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = sm.Shutdown(ctx)
		_ = pd.Shutdown(ctx)
	})
	return l1.Addr().String(), l2.Addr().String()
}

// rawRequest encodes req as Postfix would, values verbatim (a CR inside a
// value included).
func rawRequest(t *testing.T, req *policyd.Request) []byte {
	t.Helper()
	b, err := policyd.AppendRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exchange sends one policy request on a new connection and returns
// everything the server wrote until it closed the connection or 200 ms of
// silence.
func exchange(t *testing.T, addr string, raw []byte) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(raw); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		_ = nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := nc.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return string(got)
		}
	}
}
