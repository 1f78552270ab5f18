package probe

import "testing"

// Name matching as Postfix's match_servername (src/tls/tls_client.c) does
// it, with tls_wildcard_matches_multiple_labels = yes (the default).
func TestMatchServerName(t *testing.T) {
	hostname := func(h string) []namePattern { return []namePattern{{name: h}} }
	nexthop := func(d string) []namePattern { return []namePattern{{name: d}, {name: d, sub: true}} }
	tests := []struct {
		certid string
		pats   []namePattern
		want   bool
	}{
		// match=hostname (the "verify" default)
		{"mx1.example.com", hostname("mx1.example.com"), true},
		{"MX1.Example.COM", hostname("mx1.example.com"), true},
		{"mx1.example.com.", hostname("mx1.example.com"), true},
		{"mx2.example.com", hostname("mx1.example.com"), false},
		{"*.example.com", hostname("mx1.example.com"), true},
		{"*.example.com", hostname("a.mx1.example.com"), true}, // multi-label wildcard (Postfix default)
		{"*.example.com", hostname("example.com"), false},
		{"*.example.com", hostname("mx1.example.org"), false},
		{"*.", hostname("mx1.example.com"), false},
		{"*", hostname("com"), false},
		{"mx1.example.com", hostname("example.com"), false},
		// match=nexthop:dot-nexthop (the "secure" default)
		{"example.com", nexthop("example.com"), true},
		{"mx1.example.com", nexthop("example.com"), true},
		{"a.b.example.com", nexthop("example.com"), true},
		{"*.example.com", nexthop("example.com"), true}, // literally a subdomain string
		{"badexample.com", nexthop("example.com"), false},
		{"mx.hoster.net", nexthop("example.com"), false},
		{"com", nexthop("example.com"), false},
		{".example.com", nexthop("example.com"), false},
	}
	for _, tc := range tests {
		if got := matchServerName(tc.certid, tc.pats); got != tc.want {
			t.Errorf("matchServerName(%q, %+v) = %v, want %v", tc.certid, tc.pats, got, tc.want)
		}
	}
}
