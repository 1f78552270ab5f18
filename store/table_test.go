package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeFiles creates files (path -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// errLines returns the messages of an ErrorList, one string each.
func errLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, not ErrorList: %v", err, err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Error())
	}
	if err.Error() != strings.Join(out, "\n") {
		t.Errorf("ErrorList.Error() = %q, want the errors joined by newlines", err.Error())
	}
	return out
}

func TestLoadDesignExample(t *testing.T) {
	tb, err := LoadTable("testdata/design/table.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		key, text string
		testing   bool
		src       string
	}
	var got []row
	for _, e := range tb.Outbound {
		got = append(got, row{e.Key, e.Policy.Text, e.Testing, e.Source.String()})
	}
	inc := filepath.Join("testdata/design/postfix/tls_policy")
	want := []row{
		{"bank.example", "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", false, "testdata/design/table.yaml:8"},
		{".bank.example", "encrypt", false, "testdata/design/table.yaml:9"},
		{"[smtp.partner.example]:587", "verify", false, "testdata/design/table.yaml:10"},
		{"lawfirm.example", "encrypt", true, "testdata/design/table.yaml:11"},
		{"example.edu", "none", false, inc + ":2"},
		{"example.mil", "may", false, inc + ":3"},
		{"example.gov", "encrypt protocols=TLSv1.2", false, inc + ":4"},
		{"example.com", "verify ciphers=high", false, inc + ":6"},
		{"example.net", "secure", false, inc + ":7"},
		{".example.net", "secure match=.example.net:example.net", false, inc + ":8"},
		{"[mail.example.org]:587", "secure match=nexthop", false, inc + ":9"},
		{"[thumb.example.org]", "fingerprint match=b6:b4:72:34:e2:59:cd:00:c2:ca:63:0d:4d:cc:2c:7d:84:de:e6:2f match=51:e9:af:2e:1e:40:1f:00:64:0a:30:35:2d:09:16:31:5a:eb:82:76", false, inc + ":11"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("outbound:\n got %v\nwant %v", got, want)
	}
	law := tb.Outbound[3]
	if law.Note != "contract 2026-14, owner legal@" || !law.ReviewBy.Equal(time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("lawfirm.example long form: note %q review_by %v", law.Note, law.ReviewBy)
	}
	if len(tb.Recipients) != 2 || tb.Recipients[0].Key != "cfo@partner.example" || tb.Recipients[1].Policy.Level != LevelVerify {
		t.Errorf("recipients = %+v", tb.Recipients)
	}
	if len(tb.Senders) != 1 || tb.Senders[0].Key != "compliance@ourcorp.example" {
		t.Errorf("senders = %+v", tb.Senders)
	}
	d := tb.Defaults
	if d.Outbound != nil || d.OutboundSource.String() != "testdata/design/table.yaml:2" || d.Learn != LearnOff || d.LearnMaxAge != 720*time.Hour || d.InboundAction != ActionDefer {
		t.Errorf("defaults = %+v", d)
	}
	if len(tb.Inbound) != 3 {
		t.Fatalf("inbound = %d rules", len(tb.Inbound))
	}
	r := tb.Inbound[2]
	wantRule := InboundRule{Name: "partner-relay", Client: []string{"192.0.2.0/24", "2001:db8::/32", "mx.partner.example"},
		Require: RequireFingerprint, Fingerprints: []string{fp32}, Action: ActionDefer, Testing: true, Header: "X-TLS-Policy",
		Source: Source{"testdata/design/table.yaml", 32}}
	if r.Name != wantRule.Name || !slices.Equal(r.Client, wantRule.Client) || r.Require != wantRule.Require ||
		!slices.Equal(r.Fingerprints, wantRule.Fingerprints) || r.Action != wantRule.Action || r.Testing != wantRule.Testing ||
		r.Header != wantRule.Header || r.Source != wantRule.Source {
		t.Errorf("rule = %+v\nwant %+v", r, wantRule)
	}
	if got := tb.Inbound[0].From; !slices.Equal(got, []string{"bank.example", ".bank.example", "alice@partner.example"}) {
		t.Errorf("bank-partners from = %v", got)
	}
	abs, _ := filepath.Abs("testdata/design")
	if want := []string{filepath.Join(abs, "postfix/tls_policy"), filepath.Join(abs, "table.yaml")}; !slices.Equal(tb.Files, want) {
		t.Errorf("Files = %v, want %v", tb.Files, want)
	}
	if want := []string{abs, filepath.Join(abs, "postfix")}; !slices.Equal(tb.Dirs, want) {
		t.Errorf("Dirs = %v, want %v", tb.Dirs, want)
	}
}

func TestParseFileForms(t *testing.T) {
	in := `outbound:
  UPPER.Example.: encrypt
  "[MX.Relay.Example]:2526": verify
  "[192.0.2.25]": encrypt
  "[IPv6:2001:DB8::25]:587": encrypt
  mx3.relay.example:2526: "encrypt   protocols=>=TLSv1.2"
  mx4.relay.example:submission: may
  .sub.example: dane
  long.example:
    policy: secure
    testing: false
    note: "n"
recipients:
  CFO@Partner.Example: encrypt
  .audit.example:
    policy: verify
    testing: true
    review_by: 2026-01-31
senders:
  audit.example: secure
defaults:
  outbound: may
  learn: enforce
  learn_max_age: 48h
  inbound_action: reject
inbound:
  - name: r
    from: "<>"
    require: tls
`
	tb, err := ParseFile("t.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range tb.Outbound {
		keys = append(keys, e.Key+"="+e.Policy.Text)
	}
	want := []string{"upper.example=encrypt", "[mx.relay.example]:2526=verify", "[192.0.2.25]=encrypt",
		"[ipv6:2001:db8::25]:587=encrypt", "mx3.relay.example:2526=encrypt protocols=>=TLSv1.2",
		"mx4.relay.example:submission=may", ".sub.example=dane", "long.example=secure"}
	if !slices.Equal(keys, want) {
		t.Errorf("outbound keys\n got %q\nwant %q", keys, want)
	}
	if r := tb.Recipients[1]; r.Key != ".audit.example" || !r.Testing || r.ReviewBy.Format(time.DateOnly) != "2026-01-31" {
		t.Errorf("recipient = %+v", r)
	}
	if tb.Recipients[0].Key != "cfo@partner.example" || tb.Senders[0].Policy.Level != LevelSecure {
		t.Errorf("recipients %+v senders %+v", tb.Recipients[0], tb.Senders[0])
	}
	d := tb.Defaults
	if d.Outbound == nil || d.Outbound.Text != "may" || d.OutboundSource != (Source{"t.yaml", 22}) || d.Learn != LearnEnforce || d.LearnMaxAge != 48*time.Hour || d.InboundAction != ActionReject {
		t.Errorf("defaults = %+v", d)
	}
	if r := tb.Inbound[0]; r.Action != ActionReject || !slices.Equal(r.From, []string{"<>"}) {
		t.Errorf("rule = %+v (action must default to defaults.inbound_action)", r)
	}
}

func TestParseFileEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "---\n", "~\n", "outbound:\nrecipients: ~\ninclude: []\n"} {
		tb, err := ParseFile("t.yaml", strings.NewReader(in))
		if err != nil {
			t.Errorf("ParseFile(%q): %v", in, err)
			continue
		}
		if len(tb.Outbound) != 0 || tb.Defaults.Learn != LearnOff || tb.Defaults.InboundAction != ActionDefer {
			t.Errorf("ParseFile(%q) = %+v", in, tb)
		}
	}
}

// TestParseFileErrors checks every kind of error, with its exact text.
func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"yaml syntax", "outbound:\n  a.example: encrypt\n\tb.example: x\n",
			// go-yaml reports the line where the construct it was
			// scanning started, here the line before the tab; the
			// error names the tab's line.
			[]string{"t.yaml:3: YAML syntax: found a tab character that violates indentation"}},
		{"tab further down", "outbound:\n  a.example: encrypt\n  b.example: encrypt\n  c.example: encrypt\n\td.example: encrypt\n",
			[]string{"t.yaml:5: YAML syntax: found a tab character that violates indentation"}},
		{"unquoted bracket key", "outbound:\n  [smtp.example]:587: verify\n",
			[]string{`t.yaml:2: YAML syntax: did not find expected key (keys that start with "[" must be quoted: "[host]:port": policy)`}},
		{"unquoted bracket key further down", "defaults:\n  outbound: may\noutbound:\n  a.example: encrypt\n  b.example: encrypt\n  [smtp.partner.example]:587: verify\n  c.example: encrypt\n",
			[]string{`t.yaml:6: YAML syntax: did not find expected key (keys that start with "[" must be quoted: "[host]:port": policy)`}},
		{"other syntax errors keep go-yaml's line", "outbound:\n  a.example: encrypt\n  b.example: \"unterminated\n  c.example: encrypt\n",
			[]string{"t.yaml:3: YAML syntax: found unexpected end of stream"}},
		{"not a mapping", "- outbound\n",
			[]string{"t.yaml:1: the table: want a mapping of sections (defaults, outbound, recipients, senders, inbound, include)"}},
		{"two documents", "outbound: {}\n---\nsenders: {}\n",
			[]string{`t.yaml:2: more than one YAML document ("---"): put each in its own file`}},
		{"alias", "outbound:\n  a.example: &x encrypt\n  b.example: *x\n",
			[]string{"t.yaml:3: YAML aliases (*x) are not supported in the policy table"}},
		{"unknown section", "outbond:\n  a.example: encrypt\n",
			[]string{`t.yaml:1: unknown section "outbond" (want defaults, outbound, recipients, senders, inbound, include)`}},
		{"duplicate section", "outbound:\n  a.example: encrypt\noutbound:\n  b.example: encrypt\n",
			[]string{`t.yaml:3: duplicate section "outbound" (first at t.yaml:1)`}},
		{"section not a mapping", "outbound: [a]\n",
			[]string{"t.yaml:1: outbound: want a mapping of keys to policies"}},
		{"unknown level", "outbound:\n  bank.example: secrue\n",
			[]string{`t.yaml:2: bank.example: unknown level "secrue" (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`}},
		{"bad attribute", "outbound:\n  bank.example: encrypt match=nexthop\n",
			[]string{`t.yaml:2: bank.example: attribute "match" is not allowed at level encrypt (only at fingerprint, verify, secure)`}},
		{"no policy", "outbound:\n  bank.example:\n",
			[]string{"t.yaml:2: bank.example: no policy"}},
		{"empty policy", "outbound:\n  bank.example: \"\"\n",
			[]string{"t.yaml:2: bank.example: empty policy"}},
		{"bad domain", "outbound:\n  bank..example: encrypt\n",
			[]string{`t.yaml:2: invalid key "bank..example": empty label (misplaced ".")`}},
		{"bad port", "outbound:\n  \"[mx.example]:99999\": encrypt\n",
			[]string{`t.yaml:2: invalid key "[mx.example]:99999": port "99999" is not a number from 1 to 65535`}},
		{"ipv6 without prefix", "outbound:\n  \"[2001:db8::1]\": encrypt\n",
			[]string{`t.yaml:2: invalid key "[2001:db8::1]": an IPv6 address is written [ipv6:2001:db8::1], as Postfix does`}},
		{"numeric domain", "outbound:\n  192.0.2.1: encrypt\n",
			[]string{`t.yaml:2: invalid key "192.0.2.1": numeric name (write an IP address as [192.0.2.1] or [ipv6:2001:db8::1])`}},
		{"address as outbound key", "outbound:\n  bob@bank.example: encrypt\n",
			[]string{`t.yaml:2: invalid key "bob@bank.example": outbound keys are next hops, not addresses (per-address rules go under recipients)`}},
		{"duplicate key, case and trailing dot", "outbound:\n  bank.example: encrypt\n  BANK.Example.: verify\n",
			[]string{`t.yaml:3: duplicate key "bank.example" (first at t.yaml:2)`}},
		{"unknown field", "outbound:\n  bank.example:\n    polcy: encrypt\n",
			[]string{"t.yaml:2: bank.example: no policy (the long form needs policy: …)",
				`t.yaml:3: unknown field "polcy" in outbound entry "bank.example" (want policy, testing, note, review_by)`}},
		{"duplicate field", "outbound:\n  bank.example:\n    policy: encrypt\n    policy: verify\n",
			[]string{`t.yaml:4: duplicate field "policy" (first at t.yaml:3)`}},
		{"testing not bool", "outbound:\n  bank.example:\n    policy: encrypt\n    testing: yes\n",
			[]string{"t.yaml:4: bank.example: testing: want true or false"}},
		{"review_by not a date", "outbound:\n  bank.example:\n    policy: encrypt\n    review_by: 30.06.2027\n",
			[]string{`t.yaml:4: bank.example: review_by "30.06.2027" is not a date (YYYY-MM-DD)`}},
		{"list value", "outbound:\n  bank.example: [encrypt]\n",
			[]string{"t.yaml:2: bank.example: want a policy string or a mapping with policy, testing, note, review_by"}},
		{"recipient level without transport", "recipients:\n  cfo@partner.example: may\n",
			[]string{"t.yaml:2: cfo@partner.example: level may has no transport: recipients entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure"}},
		{"sender dane", "senders:\n  a@ourcorp.example: dane-only\n",
			[]string{"t.yaml:2: a@ourcorp.example: level dane-only has no transport: senders entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure"}},
		{"recipient attributes", "recipients:\n  audit.example: verify match=hostname\n",
			[]string{"t.yaml:2: audit.example: attributes are not supported in recipients (the entry only selects the transport tlspolicyd-verify:, whose TLS policy comes from map tls_policy_verify): put match=hostname on an outbound entry"}},
		{"recipient bad address", "recipients:\n  \"@audit.example\": verify\n  a@b@c.example: verify\n",
			[]string{`t.yaml:2: invalid address "@audit.example": empty local part (for a whole domain write just the domain)`,
				`t.yaml:3: invalid address "a@b@c.example": more than one "@"`}},
		{"defaults", "defaults:\n  outbound: bogus\n  learn: always\n  learn_max_age: 30x\n  inbound_action: bounce\n  probe: yes\n",
			[]string{`t.yaml:2: defaults.outbound: unknown level "bogus" (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`,
				`t.yaml:3: defaults.learn: "always" is not off, report or enforce`,
				`t.yaml:4: defaults.learn_max_age: "30x" is not a positive duration (e.g. 720h or 30d)`,
				`t.yaml:5: defaults.inbound_action: "bounce" is not defer or reject`,
				`t.yaml:6: unknown field "probe" in defaults (want outbound, learn, learn_max_age, inbound_action, allow_empty)`}},
		{"inbound", `inbound:
  - from: [bank.example]
    require: tls
  - name: a
    from: [bank.example]
    require: tls2
  - name: a
    to: [x@ourcorp.example]
    require: tls
  - name: b
    require: tls
  - name: c
    client: [192.0.2.1/24, "::1", mx.example, 300.1.1.1/8]
    require: cert
  - name: d
    from: [""]
    to: "@x"
    require: tls
  - name: e
    from: [a.example]
  - name: f
    from: [a.example]
    require: fingerprint
  - name: g
    from: [a.example]
    require: tls
    fingerprints: ["` + fp32 + `"]
  - name: h
    from: [a.example]
    require: tls
    header: X-Test
  - name: i
    from: [a.example]
    require: fingerprint
    fingerprints: [AB:CD]
    testing: true
    header: "Bad Header:"
    actoin: reject
`,
			[]string{
				"t.yaml:2: inbound rule has no name",
				`t.yaml:6: inbound rule "a": require "tls2" is not tls, tls1.2, tls1.3, cert or fingerprint`,
				`t.yaml:7: duplicate inbound rule "a" (first at t.yaml:4)`,
				`t.yaml:10: inbound rule "b" has no from, to or client: it would apply to all mail (to require TLS from every client use Postfix's smtpd_tls_security_level instead)`,
				`t.yaml:13: inbound rule "c": client: "192.0.2.1/24" has host bits set (did you mean 192.0.2.0/24?)`,
				`t.yaml:13: inbound rule "c": client: "300.1.1.1/8" is not a CIDR prefix`,
				`t.yaml:16: inbound rule "d": from: empty sender: write "<>" for the null sender`,
				`t.yaml:17: inbound rule "d": to: invalid address "@x": empty local part (for a whole domain write just the domain)`,
				`t.yaml:19: inbound rule "e" has no require (want tls, tls1.2, tls1.3, cert or fingerprint)`,
				`t.yaml:21: inbound rule "f": require fingerprint needs fingerprints: ["AB:CD:…"]`,
				`t.yaml:27: inbound rule "g": fingerprints are only used with require: fingerprint`,
				`t.yaml:31: inbound rule "h": header is only used with testing: true`,
				`t.yaml:35: inbound rule "i": fingerprint "AB:CD": 2 bytes; a digest has 16 (md5) to 64 (sha512) bytes`,
				`t.yaml:37: inbound rule "i": header "Bad Header:": invalid character ' ' in a header name`,
				`t.yaml:38: unknown field "actoin" in inbound rule "i" (want name, from, to, client, require, fingerprints, action, testing, header)`,
			}},
		{"include", "include:\n  - postfix: missing/tls_policy\n  - exim: x\n  - postfix: \"\"\n",
			[]string{"t.yaml:2: include missing/tls_policy: cannot open: no such file or directory",
				`t.yaml:3: unknown include type "exim" (want postfix: path)`,
				"t.yaml:4: include postfix: empty path"}},
		{"all errors collected and sorted", "senders:\n  x@y.example: may\noutbound:\n  a.example: bogus\n  b.example: none ciphers=high\n",
			[]string{"t.yaml:2: x@y.example: level may has no transport: senders entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure",
				`t.yaml:4: a.example: unknown level "bogus" (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`,
				`t.yaml:5: b.example: attribute "ciphers" is not allowed at level none: TLS is disabled (Postfix ignores it)`}},
	}
	t.Chdir(t.TempDir())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := ParseFile("t.yaml", strings.NewReader(tt.in))
			got := errLines(t, err)
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
			if err != nil && tb != nil {
				t.Errorf("a table with errors must be rejected whole, got %+v", tb)
			}
		})
	}
}

func TestPostfixInclude(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFiles(t, dir, map[string]string{
		"t.yaml": "outbound:\n  dup.example: encrypt\ninclude:\n  - postfix: pf/tls_policy\n  - postfix: ./pf/../pf/tls_policy\n",
		"pf/tls_policy": "" +
			"   indented.example encrypt\n" + // 1: continuation without entry
			"# comment\n" + // 2
			"ok.example\tsecure\n" + // 3
			"  match=nexthop\n" + // 4: continues line 3
			"\n" + // 5
			"nopolicy.example\n" + // 6
			"dup.example may\n" + // 7: duplicate of t.yaml:2
			"ok.example encrypt\n" + // 8: duplicate of line 3
			"bad.example fingerprint\n" + // 9
			"   ciphers=high\n" + // 10
			"[2001:db8::1]:25 encrypt\n", // 11
	})
	_, err := LoadTable("t.yaml")
	want := []string{
		"pf/tls_policy:1: continuation line (starts with whitespace) without a preceding entry",
		// An included file's errors quote none of it (it may be any
		// readable file); after 5 the rest is skipped.
		"pf/tls_policy:6: no policy (want \"key  level attr=value …\")",
		`pf/tls_policy:7: duplicate key (first at t.yaml:2)`,
		`pf/tls_policy:8: duplicate key (first at pf/tls_policy:3)`,
		"pf/tls_policy:9: invalid policy: level fingerprint requires match= with the certificate or public-key fingerprint(s)",
		`pf/tls_policy:11: stopped reading after 5 errors: not a Postfix tls_policy file?`,
		"t.yaml:5: ./pf/../pf/tls_policy is already included (first at t.yaml:4)",
	}
	if got := errLines(t, err); !slices.Equal(got, want) {
		t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}

	// The same file fixed: continuation lines join the logical line.
	writeFiles(t, dir, map[string]string{
		"t.yaml":        "include:\n  - postfix: pf/tls_policy\n",
		"pf/tls_policy": "# c\nok.example\tsecure\n  # c\n\n  match=nexthop\n\t\tservername=hostname\nUPPER.Example. may\n",
	})
	tb, err := LoadTable("t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Outbound) != 2 || tb.Outbound[0].Policy.Text != "secure match=nexthop servername=hostname" ||
		tb.Outbound[0].Source != (Source{"pf/tls_policy", 2}) || tb.Outbound[1].Key != "upper.example" {
		t.Errorf("outbound = %+v %+v", tb.Outbound[0], tb.Outbound[1])
	}
}

func TestLoadTableDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFiles(t, dir, map[string]string{
		"tbl/a.yaml":      "defaults:\n  learn: report\noutbound:\n  bank.example: secure\n",
		"tbl/b.yml":       "outbound:\n  other.example: encrypt\ninclude:\n  - postfix: ../pf/policy\n",
		"tbl/c.yaml.orig": "not: [yaml",
		"tbl/.#a.yaml":    "not: [yaml",
		"tbl/README.md":   "# table",
		"tbl/sub/x.yaml":  "not: [yaml",
		"pf/policy":       "pf.example encrypt\n",
		"empty/notes.txt": "",
		"dups/a.yaml":     "defaults:\n  learn: report\noutbound:\n  x.example: encrypt\n",
		"dups/b.yaml":     "defaults:\n  learn: enforce\n\noutbound:\n  X.example: verify\ninbound:\n  - name: r\n    from: [a.example]\n    require: tls\n",
		"dups/c.yaml":     "inbound:\n  - name: r\n    from: [b.example]\n    require: tls\n",
		"broken/a.yaml":   "outbound:\n  a.example: bogus\n",
		"broken/b.yaml":   "outbound:\n  b.example: [\n",
		"broken/c.yaml":   "recipients:\n  c.example: none\n",
	})
	tb, err := LoadTable("tbl")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range tb.Outbound {
		keys = append(keys, e.Key+"@"+e.Source.String())
	}
	if want := []string{"bank.example@tbl/a.yaml:4", "other.example@tbl/b.yml:2", "pf.example@pf/policy:1"}; !slices.Equal(keys, want) {
		t.Errorf("outbound = %v, want %v", keys, want)
	}
	if tb.Defaults.Learn != LearnReport {
		t.Errorf("learn = %q", tb.Defaults.Learn)
	}
	wantFiles := []string{filepath.Join(dir, "pf/policy"), filepath.Join(dir, "tbl/a.yaml"), filepath.Join(dir, "tbl/b.yml")}
	if !slices.Equal(tb.Files, wantFiles) {
		t.Errorf("Files = %v, want %v", tb.Files, wantFiles)
	}
	if want := []string{filepath.Join(dir, "pf"), filepath.Join(dir, "tbl")}; !slices.Equal(tb.Dirs, want) {
		t.Errorf("Dirs = %v, want %v", tb.Dirs, want)
	}

	for _, tt := range []struct {
		path string
		want []string
	}{
		{"empty", []string{"empty: no *.yaml or *.yml files in directory"}},
		{"nope", []string{"nope: cannot stat: no such file or directory"}},
		{"dups", []string{
			`dups/b.yaml:2: duplicate setting "defaults.learn" (first at dups/a.yaml:2)`,
			`dups/b.yaml:5: duplicate key "x.example" (first at dups/a.yaml:4)`,
			`dups/c.yaml:2: duplicate inbound rule "r" (first at dups/b.yaml:7)`,
		}},
		{"broken", []string{
			`broken/a.yaml:2: a.example: unknown level "bogus" (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)`,
			"broken/b.yaml:2: YAML syntax: did not find expected node content",
			"broken/c.yaml:2: c.example: level none has no transport: recipients entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure",
		}},
	} {
		tb, err := LoadTable(tt.path)
		if got := errLines(t, err); !slices.Equal(got, tt.want) {
			t.Errorf("LoadTable(%q) errors:\n got %s\nwant %s", tt.path, strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
		}
		if tb != nil {
			t.Errorf("LoadTable(%q) returned a table despite errors", tt.path)
		}
	}
}

func TestCheckKeys(t *testing.T) {
	outbound := map[string]bool{
		"bank.example": true, ".bank.example": true, "[mx.example]": true, "[mx.example]:587": true,
		"mx.example:2526": true, "mx.example:smtp": true, "[192.0.2.1]": true, "[192.0.2.1]:25": true,
		"[ipv6:2001:db8::1]": true, "[ipv6:2001:db8::1]:587": true, "localhost": true, "_dmarc.example": true,
		"xn--bcher-kva.example": true, "bücher.example": true, "a-b.example": true, "123.example": true,
		"": false, ".": false, "..example": false, "a..example": false, "-a.example": false, "a-.example": false,
		"a b.example": false, "a,b.example": false, "[mx.example": false, "[mx.example]x": false, "[mx.example]:": false,
		"[mx.example]:0": false, "mx.example:65536": false, "mx.example:sm tp": false, "[ipv6:192.0.2.1]": false,
		"[2001:db8::1]": false, "192.0.2.1": false, "192.0.2.1:25": false, "a@b.example": false, "*.example": false,
		"[]": false, strings.Repeat("a", 64) + ".example": false, strings.Repeat("a.", 128) + "example": false,
	}
	for k, ok := range outbound {
		if err := checkOutboundKey(k); (err == nil) != ok {
			t.Errorf("checkOutboundKey(%q) = %v, want ok=%v", k, err, ok)
		}
	}
	address := map[string]bool{
		"cfo@partner.example": true, "audit.example": true, ".audit.example": true, "a+b@x.example": true,
		"a.b@[192.0.2.1]": true, "a@[ipv6:2001:db8::1]": true,
		"": false, "@x.example": false, "a@": false, "a@b@c.example": false, "a b@x.example": false,
		"<>": false, "a@x..example": false, ".": false, "a@[2001:db8::1]": false,
	}
	for k, ok := range address {
		if err := checkAddressKey(k); (err == nil) != ok {
			t.Errorf("checkAddressKey(%q) = %v, want ok=%v", k, err, ok)
		}
	}
	for in, want := range map[string]string{"UPPER.Example": "upper.example", "bank.example.": "bank.example",
		"bank.example..": "bank.example.", "[MX.Example]:25": "[mx.example]:25", "": "", ".": ""} {
		if got := NormalizeKey(in); got != want {
			t.Errorf("NormalizeKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Source: Source{"a.yaml", 3}, Msg: "bad"}
	if e.Error() != "a.yaml:3: bad" {
		t.Errorf("Error() = %q", e.Error())
	}
	if s := (Source{File: "dir"}).String(); s != "dir" {
		t.Errorf("Source without line = %q", s)
	}
	l := ErrorList{{Source{"b.yaml", 1}, "x"}, {Source{"a.yaml", 9}, "y"}, {Source{"a.yaml", 2}, "z"}}
	l.sort()
	if got := l.Error(); got != "a.yaml:2: z\na.yaml:9: y\nb.yaml:1: x" {
		t.Errorf("sorted list = %q", got)
	}
	if ErrorList(nil).err() != nil {
		t.Error("empty ErrorList must be a nil error")
	}
}

// TestPoliciesShared: entries with the same policy text share one parsed
// *Policy (a table has few distinct policies; one per entry cost 113 MB
// at 1,000,000 entries), also across files and Postfix includes.
func TestPoliciesShared(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"tbl/a.yaml": "outbound:\n  a.example: encrypt\n  b.example: {policy: encrypt, testing: true}\n  c.example: verify\n",
		"tbl/b.yaml": "outbound:\n  d.example: encrypt\n  e.example: \"encrypt  \"\ninclude:\n  - postfix: ../pf\nrecipients:\n  x@y.example: verify\n",
		"pf":         "f.example encrypt\n",
	})
	tb, err := LoadTable(filepath.Join(dir, "tbl"))
	if err != nil {
		t.Fatal(err)
	}
	byText := map[string]*Policy{}
	for _, e := range slices.Concat(tb.Outbound, tb.Recipients) {
		if p, ok := byText[e.Policy.Text]; ok && p != e.Policy {
			t.Errorf("%s: a second *Policy for %q", e.Key, e.Policy.Text)
		}
		byText[e.Policy.Text] = e.Policy
	}
	if len(byText) != 2 {
		t.Errorf("distinct policies %v, want encrypt and verify", byText)
	}
	if _, err := Build(tb); err != nil {
		t.Fatal(err)
	}
}

// TestIncludeQuotesNothing: an include of a file that is not a tls_policy
// file (/etc/shadow, say) names the file, the line and the kind of error,
// never its content, and stops after a few errors.
func TestIncludeQuotesNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	secret := "s3cr3t"
	var shadow strings.Builder
	for i := range 50 {
		fmt.Fprintf(&shadow, "user%d:$6$%s%d$abcdef:19000:0:99999:7:::\n", i, secret, i)
	}
	writeFiles(t, dir, map[string]string{
		"t.yaml": "include:\n  - postfix: shadow\n  - postfix: policies\n",
		"shadow": shadow.String(),
		// Lines whose key is valid and whose policy quotes the secret.
		"policies": "a.example " + secret + "\n" +
			"b.example encrypt " + secret + "\n" +
			"c.example encrypt " + secret + "=1\n" +
			"d.example encrypt ciphers=" + secret + "\n" +
			"e.example may protocols=" + secret + "\n",
	})
	_, err := LoadTable("t.yaml")
	got := errLines(t, err)
	want := []string{
		"policies:1: invalid policy: unknown level (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)",
		"policies:2: invalid policy: malformed attribute (want name=value)",
		"policies:3: invalid policy: unknown attribute (Postfix 3.7 knows ciphers, exclude, protocols, match, connection_reuse, tafile, servername)",
		"policies:4: invalid policy: invalid value of attribute ciphers",
		"policies:5: invalid policy: invalid value of attribute protocols",
		"shadow:1: invalid key (want a next hop: domain, .domain, [host] or [host]:port)",
		"shadow:2: invalid key (want a next hop: domain, .domain, [host] or [host]:port)",
		"shadow:3: invalid key (want a next hop: domain, .domain, [host] or [host]:port)",
		"shadow:4: invalid key (want a next hop: domain, .domain, [host] or [host]:port)",
		"shadow:5: invalid key (want a next hop: domain, .domain, [host] or [host]:port)",
		"shadow:6: stopped reading after 5 errors: not a Postfix tls_policy file?",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	for _, e := range got {
		if strings.Contains(e, secret) || strings.Contains(e, "user") {
			t.Errorf("error quotes the included file: %s", e)
		}
	}
}

// TestLearnMaxAgeDays: learn_max_age takes days as report --since does
// ("30d" was refused).
func TestLearnMaxAgeDays(t *testing.T) {
	for s, want := range map[string]time.Duration{"30d": 720 * time.Hour, "1d12h": 36 * time.Hour, "720h": 720 * time.Hour} {
		tb, err := ParseFile("t.yaml", strings.NewReader("defaults:\n  learn_max_age: "+s+"\n"))
		if err != nil || tb.Defaults.LearnMaxAge != want {
			t.Errorf("learn_max_age %s: %v, %v; want %v", s, tb.Defaults.LearnMaxAge, err, want)
		}
	}
}
