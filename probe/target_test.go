package probe

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		key     string
		host    string
		port    int
		useMX   bool
		literal string
	}{
		{"example.com", "example.com", "example.com", 25, true, ""},
		{"Example.COM.", "example.com", "example.com", 25, true, ""},
		{"example.com:2526", "example.com:2526", "example.com", 2526, true, ""},
		{"[mx.example.com]", "[mx.example.com]", "mx.example.com", 25, false, ""},
		{"[MX.example.com.]:587", "[mx.example.com]:587", "mx.example.com", 587, false, ""},
		{"[192.0.2.1]", "[192.0.2.1]", "192.0.2.1", 25, false, "192.0.2.1"},
		{"[192.0.2.1]:2525", "[192.0.2.1]:2525", "192.0.2.1", 2525, false, "192.0.2.1"},
		{"[ipv6:2001:DB8::1]", "[ipv6:2001:db8::1]", "2001:db8::1", 25, false, "2001:db8::1"},
		{"[2001:db8::1]:26", "[2001:db8::1]:26", "2001:db8::1", 26, false, "2001:db8::1"},
		{" _dmarc-ish.example ", "_dmarc-ish.example", "_dmarc-ish.example", 25, true, ""},
	}
	for _, tc := range tests {
		got, err := parseTarget(tc.in, 25)
		if err != nil {
			t.Errorf("parseTarget(%q): %v", tc.in, err)
			continue
		}
		lit := ""
		if got.literal.IsValid() {
			lit = got.literal.String()
		}
		if got.key != tc.key || got.host != tc.host || got.port != tc.port || got.useMX != tc.useMX || lit != tc.literal {
			t.Errorf("parseTarget(%q) = %+v, want key %q host %q port %d mx %v literal %q",
				tc.in, got, tc.key, tc.host, tc.port, tc.useMX, tc.literal)
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	for _, in := range []string{
		"", "   ", "[", "[]", "[mx.example]x", "[mx.example]:", "example.com:", "example.com:0",
		"example.com:65536", "example.com:+25", "example.com:2_5", "192.0.2.1", "::1", "a..b", ".example",
		"exa mple.com", "exämple.com", "[1:2:3]", "[fe80::1%eth0]",
		"a" + string(make([]byte, 64)) + ".com",
	} {
		if _, err := parseTarget(in, 25); !errors.Is(err, ErrBadTarget) {
			t.Errorf("parseTarget(%q) error = %v, want ErrBadTarget", in, err)
		}
	}
}

func TestCanonical(t *testing.T) {
	got, err := Canonical("UPPER.Example.:25")
	if err != nil || got != "upper.example:25" {
		t.Errorf("Canonical = %q, %v", got, err)
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com", "[mx.example.com]:587", "[ipv6:2001:db8::1]", "a.b:25", "[", "x:",
		// Hostile or odd forms: mapped and zoned literals, bare IPs,
		// ports out of range, control bytes, over-long names.
		"[::ffff:127.0.0.1]", "[ipv6:::]:25", "[fe80::1%eth0]", "127.0.0.1", "[127.0.0.1]:0",
		"example.com:65536", "example.com:025", "UPPER.Example.", "a..b", "a.b\x00c", "a.b\r\nc",
		"[a.b]junk", strings.Repeat("a.", 130) + "com", strings.Repeat("x", 64) + ".example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := parseTarget(s, 25)
		if err != nil {
			return
		}
		// The canonical key is a fixed point.
		again, err := parseTarget(tg.key, 25)
		if err != nil || again.key != tg.key || again.port != tg.port || again.host != tg.host {
			t.Fatalf("%q -> %q -> %+v, %v", s, tg.key, again, err)
		}
	})
}

// Addresses refused without AllowPrivate (checked after resolution, so a
// public-looking name pointing at one of them is refused too). Nothing here
// is contacted: publicAddr is a pure classification.
func TestPublicAddr(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", false}, {"127.8.9.10", false}, {"10.1.2.3", false}, {"172.16.0.1", false},
		{"192.168.1.1", false}, {"169.254.1.1", false}, {"224.0.0.1", false}, {"0.0.0.0", false},
		{"0.1.2.3", false}, {"100.64.0.1", false}, {"255.255.255.255", false}, {"240.0.0.1", false},
		{"::1", false}, {"::", false}, {"fe80::1", false}, {"fc00::1", false}, {"fd12::1", false},
		{"ff02::1", false}, {"ff01::1", false}, {"::ffff:127.0.0.1", false}, {"::ffff:10.0.0.1", false},
		{"192.0.2.1", true}, {"198.51.100.7", true}, {"2001:db8::25", true}, {"::ffff:203.0.113.9", true},
		// Range edges and special-purpose ranges.
		{"100.63.255.255", true}, {"100.64.0.0", false}, {"100.127.255.255", false}, {"100.128.0.0", true},
		{"169.254.169.254", false}, {"192.0.0.8", false}, {"198.18.0.1", false}, {"198.19.255.255", false},
		{"fbff:ffff::1", true}, {"fc00::", false}, {"fdff:ffff::1", false}, {"fe80::", false},
		{"febf:ffff::1", false}, {"fec0::1", false}, {"100::1", false}, {"64:ff9b:1::1", false},
		{"::ffff:0.0.0.0", false}, {"::ffff:100.64.1.1", false}, {"::ffff:169.254.1.1", false},
		// IPv6 forms that stand for an IPv4 address: judged by it.
		{"::127.0.0.1", false}, {"::192.0.2.1", false}, // IPv4-compatible: deprecated, refused
		{"64:ff9b::127.0.0.1", false}, {"64:ff9b::10.0.0.1", false}, {"64:ff9b::192.0.2.1", true}, // NAT64
		{"::ffff:0:127.0.0.1", false}, {"::ffff:0:192.0.2.1", true}, // IPv4-translated
		{"2002:7f00:1::1", false}, {"2002:a00:1::1", false}, {"2002:c000:201::1", true}, // 6to4
		{"2001:0:7f00:1::1", false}, {"2001:0:c000:201::80ff:fffe", false}, // Teredo server, client 127.0.0.1
		{"2001:0:c000:201::3fff:fdfe", true}, // Teredo: server 192.0.2.1, client 192.0.2.1
	}
	for _, tc := range tests {
		if got := publicAddr(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("publicAddr(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// Resolver "" reads the first nameserver of /etc/resolv.conf (nothing is
// queried here).
func TestDefaultResolver(t *testing.T) {
	s, err := defaultResolver()
	if err != nil {
		t.Skipf("no usable /etc/resolv.conf: %v", err)
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		t.Errorf("defaultResolver() = %q: %v", s, err)
	}
}

func TestBareDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com": "example.com", "Example.COM.": "example.com", "mx_1.a-b.test": "mx_1.a-b.test",
		"1.2.3": "1.2.3", "[mx.example]": "", "example.com:25": "", "1.2.3.4": "", "a..b": "", ".a": "", "a.": "a",
		"": "", "exa mple.com": "", strings.Repeat("a", 64) + ".test": "",
	} {
		got, ok := BareDomain(in)
		if got != want || ok != (want != "") {
			t.Errorf("BareDomain(%q) = %q, %v; want %q", in, got, ok, want)
		}
		// The fast path agrees with the parser.
		if canonicalDomain(in) {
			if tg, err := parseTarget(in, DefaultPort); err != nil || tg.key != in || !tg.useMX {
				t.Errorf("canonicalDomain(%q) but parseTarget gives %+v, %v", in, tg, err)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { BareDomain("mail.example.com") }); n != 0 {
		t.Errorf("BareDomain of a canonical domain allocates %v times", n)
	}
}
