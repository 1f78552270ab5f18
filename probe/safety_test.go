package probe

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

// TestProbeRefusesHostileAddresses: a zone publishing public-looking MX
// names whose addresses are loopback, unspecified, private, link-local,
// CGNAT, cloud metadata, IPv4-mapped or NAT64 forms of them: every address
// is refused before connecting, the loopback fake MX listening on
// 127.0.0.2 never sees a connection, and the result is unreachable.
func TestProbeRefusesHostileAddresses(t *testing.T) {
	ca := newCA(t)
	z := newZone(t)
	f := newFarm(t, ca)
	f.goodMX(t, "127.0.0.2", "*.hostile.test")
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
		z.mx(t, "hostile.test", 10+i, h.host+".hostile.test", h.ip)
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
		r, err := p.Probe(context.Background(), fmt.Sprintf("%s:%d", target, f.port))
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if r.Status != StatusUnreachable || r.MX[0].Addrs[0].ErrorClass != ClassPrivate {
			t.Errorf("%s: status %q, addrs %+v", target, r.Status, r.MX[0].Addrs)
		}
	}
	if n := f.accepted("127.0.0.2"); n != 0 {
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

	ca := newCA(t)
	z := newZone(t) // every name is NXDOMAIN: a probe is one MX query
	f := newFarm(t, ca)
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
	if ends[2] > window/2 {
		t.Errorf("the first 3 probes took until %v, want them at once", ends[2])
	}
	if ends[3] < window-50*time.Millisecond {
		t.Errorf("the 4th probe ended after %v, before its turn at %v", ends[3], window)
	}
	queries := z.queries.Load()

	// The 4th and 5th probes took two turns of this window, t6 takes the
	// third: a deadline before the next turn fails at once.
	if _, err := p.Probe(context.Background(), "t6.test"); err != nil {
		t.Fatalf("t6: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := p.Probe(ctx, "t7.test")
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("probe over the limit with a short deadline: %v, want ErrRateLimited", err)
	}
	if el := time.Since(t0); el > 50*time.Millisecond {
		t.Errorf("refused after %v, want at once", el)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := p.Probe(cancelled, "t8.test"); !errors.Is(err, ErrRateLimited) {
		t.Errorf("probe with an ended context: %v, want ErrRateLimited", err)
	}
	if n := z.queries.Load(); n != queries+1 {
		t.Errorf("%d DNS queries for the refused probes", n-queries-1)
	}
}
