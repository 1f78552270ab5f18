package mtasts

import (
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/store"
)

func TestParsePolicy(t *testing.T) {
	// RFC 8461 §3.2's example, CRLF line ends.
	p, err := ParsePolicy([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 604800 || strings.Join(p.MX, ",") != "mail.example.com,*.example.net,backupmx.example.com" {
		t.Fatalf("parsed %+v", p)
	}
	if got, want := p.PostfixPolicy(), "secure match=mail.example.com:.example.net:backupmx.example.com servername=hostname"; got != want {
		t.Fatalf("PostfixPolicy = %q, want %q", got, want)
	}
	// The answer is a policy Postfix 3.7 accepts.
	if _, err := store.ParsePolicy(p.PostfixPolicy()); err != nil {
		t.Fatalf("store rejects %q: %v", p.PostfixPolicy(), err)
	}
	for _, c := range []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"MAIL.example.com.", true},
		{"mx1.example.net", true},
		{"a.mx1.example.net", false}, // the wildcard is one label (RFC 8461 §4.1)
		{"example.net", false},
		{"other.example.com", false},
	} {
		if got := p.Matches(c.host); got != c.want {
			t.Errorf("Matches(%q) = %v, want %v", c.host, got, c.want)
		}
	}
}

func TestParsePolicyModes(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		mode Mode
		pf   string
	}{
		{"version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n", true, ModeTesting, ""},
		{"version: STSv1\nmode: none\nmax_age: 86400\n", true, ModeNone, ""},
		{"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 0\nfuture_ext: 1\n", true, ModeEnforce, "secure match=mx.a.test servername=hostname"},
		{"mode: enforce\nmx: mx.a.test\nmax_age: 1\n", false, "", ""},                             // no version
		{"version: STSv2\nmode: enforce\nmx: mx.a.test\nmax_age: 1\n", false, "", ""},             // wrong version
		{"version: STSv1\nmode: enforce\nmax_age: 1\n", false, "", ""},                            // no mx
		{"version: STSv1\nmode: enforce\nmx: mx.a.test\n", false, "", ""},                         // no max_age
		{"version: STSv1\nmode: strict\nmx: mx.a.test\nmax_age: 1\n", false, "", ""},              // unknown mode
		{"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 31557601\n", false, "", ""},      // max_age too large
		{"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: -1\n", false, "", ""},            // negative
		{"version: STSv1\nmode: enforce\nmx: mx a.test\nmax_age: 1\n", false, "", ""},             // space in a pattern
		{"version: STSv1\nmode: enforce\nmx: mx.a.test,b\nmax_age: 1\n", false, "", ""},           // comma
		{"version: STSv1\nmode: enforce\nmx: *.*.a.test\nmax_age: 1\n", false, "", ""},            // two wildcards
		{"version: STSv1\nmode: enforce\nmode: none\nmx: mx.a.test\nmax_age: 1\n", false, "", ""}, // repeated
		{"version: STSv1\nmode enforce\nmx: mx.a.test\nmax_age: 1\n", false, "", ""},              // no colon
		{"version: STSv1\nmode: enforce\nmx: 0.0\nmax_age: 1\n", false, "", ""},                   // all-numeric (found by FuzzParsePolicy)
		{"version: STSv1\nmode: enforce\nmx: -mx.a.test\nmax_age: 1\n", false, "", ""},            // a label starting with -
		{"version: STSv1\nmode: enforce\nmx: 1.example\nmax_age: 1\n", true, ModeEnforce, "secure match=1.example servername=hostname"},
	} {
		p, err := ParsePolicy([]byte(c.in))
		if (err == nil) != c.ok {
			t.Errorf("ParsePolicy(%q): err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err == nil && (p.Mode != c.mode || p.PostfixPolicy() != c.pf) {
			t.Errorf("ParsePolicy(%q) = %+v, %q", c.in, p, p.PostfixPolicy())
		}
	}
}
