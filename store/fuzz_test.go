package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func FuzzTable(f *testing.F) {
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tls_policy"), []byte("inc.example encrypt\n[mx.inc.example]:25 verify\n  match=hostname\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	design, err := os.ReadFile("testdata/design/table.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(design))
	f.Add(resolveTable)
	for _, s := range []string{
		"",
		"outbound:\n  a.example: encrypt\n  A.example.: verify\n",
		"outbound:\n  \"[x.example]:25\": {policy: secure, testing: true, review_by: 2027-01-01}\n",
		"include:\n  - postfix: tls_policy\noutbound:\n  inc.example: may\n",
		"defaults: {outbound: \"dane\", learn: enforce, learn_max_age: 1h, inbound_action: reject}\n",
		"inbound:\n  - {name: r, from: [\"<>\"], client: [10.0.0.0/8, .x.example], require: fingerprint, fingerprints: [" + fp32 + "], testing: true, header: X-T}\n",
		"outbound:\n  a.example: &a encrypt\n  b.example: *a\n",
		"outbound:\n  <<: {a: b}\n",
		"recipients:\n  x@y.example: verify match=hostname\n",
		"senders: [\n",
		"- - -\n",
		"outbound:\n  ? [a, b]\n  : encrypt\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tb, err := ParseFile(filepath.Join(dir, "t.yaml"), strings.NewReader(in))
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %v is not a non-empty ErrorList", err)
			}
			if tb != nil {
				t.Fatal("table returned with errors")
			}
			for _, e := range list {
				if e.File == "" || e.Msg == "" || e.Line < 0 {
					t.Fatalf("incomplete error %+v", e)
				}
			}
			return
		}
		// A table that parses must build and answer every key it has.
		s, err := Build(tb)
		if err != nil {
			t.Fatalf("valid table does not build: %v", err)
		}
		for _, e := range tb.Outbound {
			if err := checkOutboundKey(e.Key); err != nil || e.Key != NormalizeKey(e.Key) {
				t.Fatalf("accepted bad key %q: %v", e.Key, err)
			}
			if p, err := ParsePolicy(e.Policy.Text); err != nil || p.Level != e.Policy.Level {
				t.Fatalf("policy text %q of %q does not re-parse: %v", e.Policy.Text, e.Key, err)
			}
			for _, m := range []string{MapPolicy, MapPolicyEncrypt, MapPolicyVerify, MapPolicySecure} {
				a, err := s.Resolve(m, e.Key, nil)
				if err != nil || (!a.Found && m != MapPolicy) {
					t.Fatalf("Resolve(%s, %q) = %+v, %v", m, e.Key, a, err)
				}
			}
		}
		for _, e := range tb.Recipients {
			if a, err := s.Resolve(MapTransport, e.Key, nil); err != nil || (!e.Testing && !a.Found) {
				t.Fatalf("Resolve(tls_transport, %q) = %+v, %v", e.Key, a, err)
			}
		}
	})
}

// FuzzPostfixPolicy fuzzes the parser of included Postfix tls_policy files.
func FuzzPostfixPolicy(f *testing.F) {
	pf, err := os.ReadFile("testdata/design/postfix/tls_policy")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(pf))
	for _, s := range []string{
		"",
		"a.example encrypt\n",
		"  cont.example encrypt\n",
		"a.example\n  secure\n\tmatch=nexthop\n# c\n  servername=hostname\n",
		"a.example may\nA.EXAMPLE. encrypt\n",
		"[ipv6:2001:db8::1]:25 fingerprint match=" + fp32 + "|" + strings.ToLower(fp32) + "\n",
		"x.example encrypt protocols=>=TLSv1.2:<=TLSv1.3 ciphers=high exclude=aNULL connection_reuse=yes\r\n",
		"x.example\x00 encrypt\n",
		"\xff.example encrypt\n",
		"x.example none ciphers=high\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p := newParser()
		p.parsePostfix("pf", []byte(in))
		lines := strings.Count(in, "\n") + 1
		for _, e := range p.errs {
			if e.File != "pf" || e.Line < 1 || e.Line > lines || e.Msg == "" {
				t.Fatalf("bad error %+v (file has %d lines)", e, lines)
			}
		}
		seen := map[string]bool{}
		for _, e := range p.t.Outbound {
			if e.Source.Line < 1 || e.Source.Line > lines {
				t.Fatalf("entry %q at line %d of %d", e.Key, e.Source.Line, lines)
			}
			if seen[e.Key] {
				t.Fatalf("duplicate key %q accepted", e.Key)
			}
			seen[e.Key] = true
			if err := checkOutboundKey(e.Key); err != nil {
				t.Fatalf("accepted bad key %q: %v", e.Key, err)
			}
			if strings.ContainsAny(e.Policy.Text, "\n\t\r") || strings.Contains(e.Policy.Text, "  ") {
				t.Fatalf("policy text %q not collapsed", e.Policy.Text)
			}
		}
	})
}

// FuzzParsePolicy checks that every accepted policy, raised to every
// floor, is a policy Postfix accepts and that meets the floor.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"may", "none", "dane", "encrypt protocols=!SSLv2:!SSLv3", "verify match=hostname:.example tafile=/x",
		"secure match=nexthop:dot-nexthop ciphers=high", "fingerprint match=" + fp32, "may ciphers=export servername=hostname",
		"Dane-Only,connection_reuse=yes", "encrypt {x=y}", "verify match=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParsePolicy(in)
		if err != nil {
			return
		}
		// Text is a fixed point: it parses to the same policy.
		if again, err := ParsePolicy(p.Text); err != nil || again.Text != p.Text || again.Level != p.Level || !slices.Equal(again.Attrs, p.Attrs) {
			t.Fatalf("Text %q of %q does not re-parse to the same policy: %v", p.Text, in, err)
		}
		for _, floor := range []Level{LevelMay, LevelEncrypt, LevelVerify, LevelSecure} {
			q := p.Raise(floor)
			if !q.Level.Satisfies(floor) {
				t.Fatalf("%q raised to %v is %v", in, floor, q.Level)
			}
			r, err := ParsePolicy(q.Text)
			if err != nil {
				t.Fatalf("%q raised to %v = %q does not parse: %v", in, floor, q.Text, err)
			}
			if r.Level != q.Level {
				t.Fatalf("%q raised to %v: text level %v != %v", in, floor, r.Level, q.Level)
			}
		}
	})
}
