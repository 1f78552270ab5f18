package store

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLint(t *testing.T) {
	const in = `defaults:
  outbound: encrypt
outbound:
  old.example:
    policy: encrypt
    review_by: 2026-01-31
    note: contract 7
  new.example:
    policy: encrypt
    review_by: 2026-02-01
  same.example:
    policy: encrypt
    testing: true
  .strict.example: secure
  x.strict.example:
    policy: verify
    testing: true
  useful.example:
    policy: secure
    testing: true
recipients:
  audit.example: secure
  bob@audit.example:
    policy: verify
    testing: true
  cfo@partner.example:
    policy: encrypt
    testing: true
senders:
  a@ourcorp.example:
    policy: encrypt
    review_by: 2025-12-31
`
	tb, err := ParseFile("t.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC)
	var got []string
	for _, w := range tb.Lint(now) {
		got = append(got, w.Error())
	}
	want := []string{
		`t.yaml:4: review_by 2026-01-31 has passed for outbound entry "old.example" (note: contract 7)`,
		`t.yaml:11: testing entry "same.example" changes nothing: without it the answer is already "encrypt" (defaults.outbound at t.yaml:2)`,
		`t.yaml:15: testing entry "x.strict.example" changes nothing: without it the answer is already "secure" (entry ".strict.example" at t.yaml:14)`,
		`t.yaml:23: testing recipients entry "bob@audit.example" changes nothing: entry "audit.example" at t.yaml:22 already requires secure`,
		`t.yaml:30: review_by 2025-12-31 has passed for senders entry "a@ourcorp.example"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Lint:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// The day itself is not late yet.
	if w := tb.Lint(time.Date(2025, 12, 31, 23, 59, 0, 0, time.UTC)); len(w) != 3 {
		t.Errorf("Lint before any review_by = %v, want only the three testing warnings", w)
	}
}

func TestLintLearnUnderStrongDefault(t *testing.T) {
	for _, tc := range []struct {
		defaults string
		want     []string
	}{
		{"  outbound: verify\n  learn: enforce\n", []string{`t.yaml:2: defaults.learn: enforce has no effect with defaults.outbound "verify": a learned policy applies only over a default of none or may, which it cannot weaken`}},
		{"  outbound: may\n  learn: enforce\n", nil},
		{"  learn: enforce\n", nil},
		{"  outbound: verify\n  learn: report\n", nil},
	} {
		tb, err := ParseFile("t.yaml", strings.NewReader("defaults:\n"+tc.defaults))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, w := range tb.Lint(time.Now()) {
			got = append(got, w.Error())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: Lint = %q, want %q", tc.defaults, got, tc.want)
		}
	}
}

// TestLintEmpty: check warns about an empty table (an empty file, a bare
// "outbound:"), which used to pass as "ok: 0 outbound".
func TestLintEmpty(t *testing.T) {
	for table, want := range map[string]bool{
		"":                                  true,
		"outbound:\n":                       true,
		"defaults:\n  learn: report\n":      true,
		"defaults:\n  allow_empty: true\n":  false,
		"defaults:\n  outbound: encrypt\n":  false,
		"defaults:\n  learn: enforce\n":     false,
		"outbound:\n  a.example: encrypt\n": false,
		"inbound:\n  - {name: r, from: a.example, require: tls}\n": false,
	} {
		tb, err := ParseFile("t.yaml", strings.NewReader(table))
		if err != nil {
			t.Fatal(err)
		}
		var got bool
		for _, w := range tb.Lint(time.Now()) {
			got = got || strings.HasPrefix(w.Error(), "t.yaml: the table is empty")
		}
		if got != want {
			t.Errorf("%q: empty-table warning %v, want %v", table, got, want)
		}
	}
}
