package mtasts

import (
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/store"
)

// FuzzParsePolicy: no input crashes the parser, and every enforced policy
// it accepts maps to a policy string Postfix (store.ParsePolicy) accepts.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"))
	f.Add([]byte("version: STSv1\nmode: testing\nmx: a\nmax_age: 31557600\nx: y\n"))
	f.Add([]byte("version:STSv1\nmode:enforce\nmx:*.a-b_c.d\nmax_age:9999999999\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if p.MaxAge < 0 || p.MaxAge > MaxAgeLimit {
			t.Fatalf("max_age %d accepted", p.MaxAge)
		}
		if pf := p.PostfixPolicy(); pf != "" {
			if _, err := store.ParsePolicy(pf); err != nil {
				t.Fatalf("policy %q maps to %q, which Postfix would reject: %v", b, pf, err)
			}
		}
	})
}

// FuzzParseTXT: no input crashes the parser, and an accepted id is 1-32
// letters and digits.
func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{"v=STSv1; id=20160831085700Z;", "v=STSv1;id=a;ext=b", "v=STSv1; id=a;;", "v=STSv1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseTXT(s)
		if err != nil {
			return
		}
		if id == "" || len(id) > 32 || !isAlnum(id) || !strings.HasPrefix(s, "v=STSv1") {
			t.Fatalf("ParseTXT(%q) accepted id %q", s, id)
		}
	})
}
