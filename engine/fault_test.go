package engine

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// Fault injection (DESIGN §5 "Fail closed"): whatever goes wrong while the
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

// frontEnds serves e with a socketmap and a policyd server on loopback and
// returns their addresses.
func frontEnds(t *testing.T, e *Engine) (smAddr, pdAddr string) {
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
		engine func(t *testing.T) *Engine
	}{
		{"resolution error", func(t *testing.T) *Engine {
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			e.fault = func(string) error { return errStore }
			return e
		}},
		{"resolution panics", func(t *testing.T) *Engine {
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			e.fault = func(op string) error { panic("resolver bug in " + op) }
			return e
		}},
		{"resolution hangs", func(t *testing.T) *Engine {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			e := New(buildStore(t, faultTable), &faultLearner{}, nil, quietLogger())
			e.fault = func(string) error { <-release; return nil }
			return e
		}},
		{"no table loaded", func(t *testing.T) *Engine {
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
