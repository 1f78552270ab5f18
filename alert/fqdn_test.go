package alert

import (
	"strings"
	"testing"
)

func TestHostsCanonical(t *testing.T) {
	const hosts = `127.0.0.1	localhost
# 127.0.1.1 wrong.example.net mail
127.0.1.1	mail.ourcorp.example mail   # Debian's installer writes this
192.0.2.9	other
::1		localhost ip6-localhost ip6-loopback
`
	for _, tt := range []struct{ short, want string }{
		{"mail", "mail.ourcorp.example"},
		{"MAIL", "mail.ourcorp.example"},
		{"other", ""},   // listed without a full name
		{"missing", ""}, // not listed
		{"localhost", ""},
	} {
		if got := hostsCanonical(strings.NewReader(hosts), tt.short); got != tt.want {
			t.Errorf("hostsCanonical(%q) = %q, want %q", tt.short, got, tt.want)
		}
	}
	if got := hostsCanonical(strings.NewReader("10.0.0.1 mx1.example.org\n"), "mx1"); got != "mx1.example.org" {
		t.Errorf("a full name alone on its line: %q", got)
	}
}

// TestDefaultFromIsFQDN: the default sender has a dot in its domain
// whenever FQDN found one.
func TestDefaultFromIsFQDN(t *testing.T) {
	from, ok := DefaultFrom()
	if !strings.HasPrefix(from, "tlspolicyd@") {
		t.Fatalf("DefaultFrom() = %q", from)
	}
	if ok != strings.Contains(strings.TrimPrefix(from, "tlspolicyd@"), ".") {
		t.Errorf("DefaultFrom() = %q, fqdn %v", from, ok)
	}
	if a := New(Config{}); a.cfg.From != "tlspolicyd@"+a.cfg.Hostname || a.cfg.From != from {
		t.Errorf("New's default From %q, Hostname %q; want %q", a.cfg.From, a.cfg.Hostname, from)
	}
}
