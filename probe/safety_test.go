package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// TestProbeRefusesHostileAddresses: a zone publishing public-looking MX
// names whose addresses are loopback, unspecified, private, link-local,
// CGNAT, cloud metadata, IPv4-mapped or NAT64 forms of them: every address
// is refused before connecting, the loopback fake MX listening on
// 127.0.0.2 never sees a connection, and the result is unreachable.
func TestProbeRefusesHostileAddresses(t *testing.T) {
	z, f := loopback(t)
	f.GoodMX(t, "127.0.0.2", time.Time{}, "*.hostile.test")
	hostile := []struct{ host, ip, recorded string }{
		{"mx-loopback", "127.0.0.2", "127.0.0.2"},
		{"mx-mapped", "::ffff:127.0.0.2", "127.0.0.2"},
		{"mx-zero", "0.0.0.0", "0.0.0.0"},
		{"mx-unspecified6", "::", "::"},
		{"mx-cgnat", "100.64.0.1", "100.64.0.1"},
		{"mx-ula", "fc00::25", "fc00::25"},
		{"mx-linklocal6", "fe80::25", "fe80::25"},
		{"mx-metadata", "169.254.169.254", "169.254.169.254"},
		{"mx-nat64", "64:ff9b::7f00:2", "64:ff9b::7f00:2"},
		{"mx-rfc1918", "10.0.0.25", "10.0.0.25"},
	}
	for i, h := range hostile {
		z.MX(t, "hostile.test", 10+i, h.host+".hostile.test", h.ip)
	}
	p := testProber(t, z, f, func(c *Config) { c.AllowPrivate = false; c.Timeout = time.Second })
	r, err := p.Probe(context.Background(), "hostile.test")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != StatusUnreachable {
		t.Errorf("status %q, want %q: %s", r.Status, StatusUnreachable, r.Reason)
	}
	if len(r.MX) != len(hostile) {
		t.Fatalf("%d MX hosts, want %d: %+v", len(r.MX), len(hostile), r.MX)
	}
	for i, mx := range r.MX {
		h := hostile[i]
		if len(mx.Addrs) != 1 || mx.Addrs[0].Addr != h.recorded || mx.Addrs[0].ErrorClass != ClassPrivate || mx.Addrs[0].Reached {
			t.Errorf("%s (%s): %+v, want %s refused as %s", mx.Host, h.ip, mx.Addrs, h.recorded, ClassPrivate)
		}
	}
	for _, target := range []string{"[127.0.0.2]", "[::ffff:127.0.0.2]", "[ipv6:::ffff:127.0.0.2]", "[0.0.0.0]", "[ipv6:::]"} {
		r, err := p.Probe(context.Background(), fmt.Sprintf("%s:%d", target, f.Port))
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if r.Status != StatusUnreachable || r.MX[0].Addrs[0].ErrorClass != ClassPrivate {
			t.Errorf("%s: status %q, addrs %+v", target, r.Status, r.MX[0].Addrs)
		}
	}
	if n := f.Accepted("127.0.0.2"); n != 0 {
		t.Errorf("refused loopback MX was connected to %d times", n)
	}
}

// TestProbeRateLimit: probes over MaxPerMinute wait for their turn; a
// caller whose deadline falls before its turn, or whose context has
// ended, gets ErrRateLimited at once and nothing is queried.
func TestProbeRateLimit(t *testing.T) {
	if got := New(Config{Resolver: "127.0.0.1:1"}).Config().MaxPerMinute; got != DefaultMaxPerMinute {
		t.Errorf("default MaxPerMinute = %d, want %d", got, DefaultMaxPerMinute)
	}
	if p := New(Config{Resolver: "127.0.0.1:1", MaxPerMinute: -1}); p.starts != nil {
		t.Error("negative MaxPerMinute still limits")
	}

	z, f := loopback(t) // every name is NXDOMAIN: a probe is one MX query
	p := testProber(t, z, f, nil)
	// The test's minute: 3 probes per 600 ms.
	const window = 600 * time.Millisecond
	p.starts = newStartWindow(3, window)

	start := time.Now()
	took := make(chan time.Duration, 5)
	for i := range 5 {
		go func() {
			r, err := p.Probe(context.Background(), fmt.Sprintf("t%d.test", i))
			if err != nil || r.Status != StatusUnreachable {
				t.Errorf("probe %d: %v %+v", i, err, r)
			}
			took <- time.Since(start)
		}()
	}
	var ends []time.Duration
	for range 5 {
		ends = append(ends, <-took)
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i] < ends[j] })
	// Only a lower bound: a loaded machine can delay the first three, but
	// nothing may let the 4th start before its turn.
	if ends[3] < window-50*time.Millisecond {
		t.Errorf("the 4th probe ended after %v, before its turn at %v", ends[3], window)
	}

	// Refusals, with a window of an hour and one turn, taken by t6: the
	// next turn is an hour away whatever the machine's load.
	p.starts = newStartWindow(1, time.Hour)
	if _, err := p.Probe(context.Background(), "t6.test"); err != nil {
		t.Fatalf("t6: %v", err)
	}
	queries := z.Queries()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := p.Probe(ctx, "t7.test")
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("probe over the limit with a short deadline: %v, want ErrRateLimited", err)
	}
	if el := time.Since(t0); el > 250*time.Millisecond {
		t.Errorf("refused after %v, want at once", el)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := p.Probe(cancelled, "t8.test"); !errors.Is(err, ErrRateLimited) {
		t.Errorf("probe with an ended context: %v, want ErrRateLimited", err)
	}
	if n := z.Queries(); n != queries {
		t.Errorf("%d DNS queries for the refused probes", n-queries)
	}
}

// TestProbeHostileServerText: what an MX says is recorded as printable
// text (no escape sequences, bare CRs or NULs that would reach logs, alert
// mails and terminals), and a server that talks without end cannot make
// the prober read more than maxSessionBytes.
func TestProbeHostileServerText(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "ansi.test", 10, "mx.ansi.test", "127.0.0.2")
	f.Raw(t, "127.0.0.2", probetest.Script{Replies: map[string]string{
		"":     "220-mx.ansi.test \x1b[2J\x1b]0;owned\x07 ready\r\n220 second\rline\x00 \xc2\x9b31m ok\r\n",
		"EHLO": "250-mx.ansi.test\r\n250 STARTTLS\r\n",
		// The refusal text lands in Error and in the verdict's reasons.
		"STARTTLS": "454 4.7.0 no\x1b[31m TLS\rtoday\r\n",
	}}.Handle)
	z.MX(t, "endless.test", 10, "mx.endless.test", "127.0.0.3")
	f.Raw(t, "127.0.0.3", func(c net.Conn) {
		line := []byte("220-" + strings.Repeat("x", 1000) + "\r\n")
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	p := testProber(t, z, f, nil)

	r, err := p.Probe(context.Background(), "ansi.test")
	if err != nil {
		t.Fatal(err)
	}
	a := r.MX[0].Addrs[0]
	for name, s := range map[string]string{"banner": a.Banner, "error": a.Error, "reason": r.Reason} {
		for _, c := range []byte(s) {
			if c < 0x20 && !(c == '\n' && name == "banner") || c == 0x7f {
				t.Errorf("%s %q holds control byte %#x", name, s, c)
				break
			}
		}
		if strings.Contains(s, "\u009b") {
			t.Errorf("%s %q holds a C1 control", name, s)
		}
	}
	if want := "mx.ansi.test ?[2J?]0;owned? ready\nsecond?line? ?31m ok"; a.Banner != want {
		t.Errorf("banner %q, want %q", a.Banner, want)
	}
	if !strings.Contains(a.Error, "454 4.7.0 no?[31m TLS?today") {
		t.Errorf("error %q", a.Error)
	}

	start := time.Now()
	r, err = p.Probe(context.Background(), "endless.test")
	if err != nil {
		t.Fatal(err)
	}
	a = r.MX[0].Addrs[0]
	if a.Reached || a.ErrorClass == "" {
		t.Errorf("endless banner accepted: %+v", a)
	}
	if len(a.Banner) > maxTextLen+len("…") {
		t.Errorf("banner of %d bytes recorded", len(a.Banner))
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("endless banner probed for %v", el)
	}
}

// TestProbeSendsNoMail: a probe is banner, EHLO, STARTTLS and QUIT; the
// prober never sends MAIL, RCPT or DATA, so it cannot be used to deliver
// or relay mail, whatever the MX answers.
func TestProbeSendsNoMail(t *testing.T) {
	z, f := loopback(t)
	var mu sync.Mutex
	var verbs []string
	heard := func(verb string) { mu.Lock(); verbs = append(verbs, verb); mu.Unlock() }
	const invite = "250 2.0.0 ok, go on\r\n" // the answer to anything not scripted
	z.MX(t, "plain.test", 10, "mx.plain.test", "127.0.0.2")
	f.Raw(t, "127.0.0.2", probetest.Script{Otherwise: invite, Heard: heard,
		Replies: map[string]string{"": "220 plain\r\n", "EHLO": "250-plain\r\n250 PIPELINING\r\n"}}.Handle)
	z.MX(t, "refuses.test", 10, "mx.refuses.test", "127.0.0.3")
	f.Raw(t, "127.0.0.3", probetest.Script{Otherwise: invite, Heard: heard,
		Replies: map[string]string{"": "220 refuses\r\n", "EHLO": "250-refuses\r\n250 STARTTLS\r\n", "STARTTLS": "454 4.7.0 not now\r\n"}}.Handle)
	p := testProber(t, z, f, nil)
	for _, target := range []string{"plain.test", "refuses.test"} {
		if _, err := p.Probe(context.Background(), target); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(verbs) == 0 {
		t.Fatal("no command recorded")
	}
	for _, v := range verbs {
		switch v {
		case "EHLO", "STARTTLS", "QUIT":
		default:
			t.Errorf("prober sent %s (all: %v)", v, verbs)
		}
	}
}
