package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"tlspolicyd"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestCLI(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		golden string // stdout golden file
		stderr string // substring expected on stderr
	}{
		{"query exact/parent/miss", []string{"query", "--table", "testdata/table", "bank.example", "Sub.Bank.Example.", "[smtp.partner.example]:587", "unlisted.example"}, 0, "query.txt", ""},
		{"query explain", []string{"query", "--table", "testdata/table", "--explain", "bank.example", "a.b.bank.example", "lawfirm.example", "unlisted.example"}, 0, "query-explain.txt", ""},
		{"query json", []string{"query", "--table", "testdata/table", "--json", "a.bank.example"}, 0, "query.json", ""},
		{"query transport", []string{"query", "--table", "testdata/table", "--map", "tls_transport", "--explain", "cfo@partner.example", "other@partner.example"}, 0, "query-transport.txt", ""},
		{"query raised floor", []string{"query", "--table", "testdata/table", "--map", "tls_policy_encrypt", "unlisted.example", "bank.example"}, 0, "query-floor.txt", ""},
		{"query unknown map", []string{"query", "--table", "testdata/table", "--map", "nope", "bank.example"}, 2, "", "unknown map; the maps are tls_policy,"},
		{"query no key", []string{"query", "--table", "testdata/table"}, 2, "", "no KEY given"},
		{"query bad table", []string{"query", "--table", "testdata/bad", "x.example"}, 1, "", "broken.yaml:3"},
		{"inbound plaintext", []string{"query", "--table", "testdata/table", "--inbound", "--sender", "alice@bank.example", "--recipient", "bob@ourcorp.example", "--explain"}, 0, "inbound-plain.txt", ""},
		{"inbound tls13", []string{"query", "--table", "testdata/table", "--inbound", "--sender", "alice@bank.example", "--recipient", "bob@ourcorp.example", "--tls", "TLSv1.3"}, 0, "inbound-tls13.txt", ""},
		{"inbound testing", []string{"query", "--table", "testdata/table", "--inbound", "--sender", "a@pilot.example", "--recipient", "bob@ourcorp.example"}, 0, "inbound-testing.txt", ""},
		{"inbound recorded request", []string{"query", "--table", "testdata/table", "--inbound", "--request", "../../engine/testdata/postfix37-rcpt-plain.txt", "--explain"}, 0, "inbound-request.txt", ""},
		{"check ok with review_by warning", []string{"check", "--table", "testdata/table"}, 0, "check-ok.txt", "partners.yaml:9: warning: review_by 2020-01-31 has passed"},
		{"check --strict fails on a warning", []string{"check", "--strict", "--table", "testdata/table"}, 1, "", "1 warning(s): failed (--strict: warnings fail)"},
		{"check --strict passes a clean table", []string{"check", "--strict", "--table", "../../examples/table"}, 0, "", ""},
		{"check errors", []string{"check", "--table", "testdata/bad"}, 1, "", "broken.yaml:3: error: "},
		{"check missing", []string{"check", "--table", "testdata/nonexistent"}, 1, "", "nonexistent"},
		{"check with a stray argument", []string{"check", "--table", "testdata/table", "testdata/bad"}, 2, "", "unexpected arguments: testdata/bad"},
		{"serve with a stray argument", []string{"serve", "--table", "testdata/table", "testdata/bad"}, 2, "", "unexpected arguments: testdata/bad"},
		{"inbound with --server", []string{"query", "--inbound", "--server", "127.0.0.1:1", "--table", "testdata/table", "--sender", "a@bank.example"}, 2, "", "give one"},
		{"inbound with --server only", []string{"query", "--inbound", "--server", "127.0.0.1:1", "--sender", "a@bank.example"}, 2, "", "--server (a socketmap address) does not apply"},
		{"query --server and --table", []string{"query", "--server", "127.0.0.1:1", "--table", "testdata/table", "bank.example"}, 2, "", "give one"},
		{"version", []string{"version"}, 0, "", ""},
		{"help", []string{"--help"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if tt.golden != "" {
				golden(t, tt.golden, out)
			}
			if tt.stderr != "" && !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tt.stderr)
			}
		})
	}
}

func TestCheckReportsDuplicateWithBothPlaces(t *testing.T) {
	_, errOut, code := runCLI(t, "check", "--table", "testdata/bad")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errOut, "broken.yaml:4: error: ") || !strings.Contains(errOut, "broken.yaml:2") {
		t.Errorf("duplicate not reported with both places:\n%s", errOut)
	}
}
