package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func runCLIInput(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runIO(append([]string{"tlspolicyd"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// TestHelpCommand: `help` and `help COMMAND` print the help pages the
// usage lists, and exit 0.
func TestHelpCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "tlspolicyd - enforce TLS per partner domain"},
		{[]string{"help", "check"}, "tlspolicyd check - lint the policy table"},
		{[]string{"check", "--help"}, "tlspolicyd check - lint the policy table"},
		{nil, "COMMANDS:"},
	} {
		out, errOut, code := runCLI(t, tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) || errOut != "" {
			t.Errorf("%q: exit %d, stdout lacks %q or stderr %q:\n%s", tc.args, code, tc.want, errOut, out)
		}
	}
}

// TestUsageErrors: a usage error prints the error and one line pointing to
// --help on stderr, nothing on stdout (not the help page), and exits 2; a
// misspelt command gets urfave's suggestion.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chek"}, "tlspolicyd: \"chek\": unknown command; did you mean check?\nRun 'tlspolicyd --help' for usage.\n"},
		{[]string{"qeury"}, "tlspolicyd: \"qeury\": unknown command; did you mean query?\nRun 'tlspolicyd --help' for usage.\n"},
		{[]string{"help", "chek"}, "tlspolicyd help: \"chek\": unknown command; did you mean check?\nRun 'tlspolicyd --help' for usage.\n"},
		{[]string{"frobnicate"}, "tlspolicyd: \"frobnicate\": unknown command\nRun 'tlspolicyd --help' for usage.\n"},
		{[]string{"query", "--explian", "bank.example"}, "tlspolicyd query: flag provided but not defined: -explian; did you mean --explain?\nRun 'tlspolicyd query --help' for usage.\n"},
		{[]string{"query", "--bogus", "bank.example"}, "tlspolicyd query: flag provided but not defined: -bogus\nRun 'tlspolicyd query --help' for usage.\n"},
		{[]string{"query", "-t", "testdata/table", "bank.example", "-m"}, "tlspolicyd query: flag needs an argument: -m\nRun 'tlspolicyd query --help' for usage.\n"},
		{[]string{"query", "-t", "testdata/table"}, "tlspolicyd query: no KEY given (try: tlspolicyd query --table TABLE bank.example)\nRun 'tlspolicyd query --help' for usage.\n"},
		{[]string{"check", "--table", "testdata/table", "testdata/bad"}, "tlspolicyd check: unexpected arguments: testdata/bad (the table is --table PATH)\nRun 'tlspolicyd check --help' for usage.\n"},
		{[]string{"probe", "--table", "testdata/table", "bank.example"}, "tlspolicyd probe: flag provided but not defined: -table\nRun 'tlspolicyd probe --help' for usage.\n"},
		{[]string{"query", "-t", "testdata/table", "--map", "tls_polcy", "bank.example"},
			"tlspolicyd query: --map \"tls_polcy\": unknown map; the maps are tls_policy, tls_policy_encrypt, tls_policy_verify, tls_policy_secure, tls_transport, tls_sender_transport\nRun 'tlspolicyd query --help' for usage.\n"},
	} {
		out, errOut, code := runCLI(t, tc.args...)
		if code != 2 || out != "" || errOut != tc.want {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, no stdout, stderr:\n%s", tc.args, code, out, errOut, tc.want)
		}
	}
}

// TestFlagsAfterKeys: flags given after the keys are flags, not keys; "--"
// makes the rest keys.
func TestFlagsAfterKeys(t *testing.T) {
	want, _, _ := runCLI(t, "query", "--table", "testdata/table", "--explain", "--map", "tls_policy_encrypt", "bank.example", "unlisted.example")
	for _, args := range [][]string{
		{"query", "-t", "testdata/table", "bank.example", "--explain", "unlisted.example", "-m", "tls_policy_encrypt"},
		{"query", "bank.example", "unlisted.example", "--table=testdata/table", "-e", "--map=tls_policy_encrypt"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != 0 || out != want {
			t.Errorf("%q: exit %d (%s):\n%s\nwant:\n%s", args, code, errOut, out, want)
		}
	}
	out, _, code := runCLI(t, "query", "-t", "testdata/table", "bank.example", "--", "--explain")
	if code != 0 || out != "bank.example\tOK secure match=nexthop:dot-nexthop protocols=>=TLSv1.2\n--explain\tNOTFOUND\n" {
		t.Errorf("after --, --explain must be a key: exit %d\n%s", code, out)
	}
}

// TestQueryOutputForm: one key prints the reply alone (as postmap -q);
// several keys, or - (keys on standard input, one a line, as postmap -q -),
// print KEY, a tab, the reply.
func TestQueryOutputForm(t *testing.T) {
	out, _, code := runCLI(t, "query", "--table", "testdata/table", "sub.bank.example")
	if code != 0 || out != "OK encrypt\n" {
		t.Errorf("one key: exit %d, %q; want \"OK encrypt\\n\"", code, out)
	}
	out, errOut, code := runCLIInput(t, "bank.example\n\n  Sub.Bank.Example.  \nunlisted.example\n", "query", "--table", "testdata/table", "-")
	if code != 0 {
		t.Errorf("stdin: exit %d: %s", code, errOut)
	}
	golden(t, "query-stdin.txt", out)
	out, _, _ = runCLIInput(t, "bank.example\n", "query", "--table", "testdata/table", "-", "--explain")
	if !strings.HasPrefix(out, "bank.example\tOK secure") || !strings.Contains(out, "step 1, exact entry") {
		t.Errorf("one key on stdin with --explain:\n%s", out)
	}
	out, _, code = runCLIInput(t, "", "query", "--table", "testdata/table", "-")
	if code != 0 || out != "" {
		t.Errorf("empty stdin: exit %d, %q", code, out)
	}
}

// TestJSONNotHTMLEscaped: --json writes ">" as it is, not \u003e.
func TestJSONNotHTMLEscaped(t *testing.T) {
	out, _, code := runCLI(t, "query", "--table", "testdata/table", "--json", "bank.example")
	if code != 0 || !strings.Contains(out, `"data": "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2"`) || strings.Contains(out, `\u003e`) {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// TestInboundTLSSpellings: --tls takes what Postfix sends (TLSv1.2) or the
// table's spelling (tls1.2), which simulate the same request; anything else
// is a usage error, not a request Postfix never sends.
func TestInboundTLSSpellings(t *testing.T) {
	args := []string{"query", "--table", "testdata/table", "--inbound", "--sender", "alice@bank.example", "--recipient", "bob@ourcorp.example", "--json"}
	want, _, _ := runCLI(t, append(args, "--tls", "TLSv1.1")...)
	if !strings.Contains(want, `"encryption_protocol": "TLSv1.1"`) || !strings.Contains(want, `"action": "450 4.7.10`) {
		t.Fatalf("TLSv1.1 request:\n%s", want)
	}
	for _, v := range []string{"tls1.1", "TLS1.1", "tlsv1.1"} {
		if out, errOut, code := runCLI(t, append(args, "--tls", v)...); code != 0 || out != want {
			t.Errorf("--tls %s: exit %d (%s):\n%s\nwant:\n%s", v, code, errOut, out, want)
		}
	}
	for _, v := range []string{"tls12", "TLSv1.4", "SSLv3", "yes", "1.2"} {
		_, errOut, code := runCLI(t, append(args, "--tls", v)...)
		if code != 2 || !strings.Contains(errOut, "want what Postfix sends as encryption_protocol: TLSv1.3, TLSv1.2, TLSv1.1 or TLSv1") {
			t.Errorf("--tls %s: exit %d, %s", v, code, errOut)
		}
	}
}

// TestFlagPlaceholders: every flag that takes a value names its kind in
// the help (--probe-timeout DURATION), never urfave's "value".
func TestFlagPlaceholders(t *testing.T) {
	app := newApp(nil, nil)
	re := regexp.MustCompile(`--[a-z-]+ value\b`)
	for _, cmd := range app.Commands {
		out, _, code := runCLI(t, cmd.Name, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", cmd.Name, code)
		}
		if m := re.FindAllString(out, -1); m != nil {
			t.Errorf("%s --help: placeholders without a kind: %q", cmd.Name, m)
		}
		for _, f := range cmd.Flags {
			if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() && !strings.Contains(df.GetUsage(), "`") {
				t.Errorf("%s --%s: usage names no `PLACEHOLDER`", cmd.Name, f.Names()[0])
			}
		}
	}
}

// TestExampleRequests: the requests under examples/requests are the
// recordings of Postfix 3.7 the engine's tests use, and README's example
// command on one of them answers the deferral it describes.
func TestExampleRequests(t *testing.T) {
	for _, f := range []string{"postfix37-rcpt-plain.txt", "postfix37-rcpt-tls13.txt", "postfix37-rcpt-tls12-client-cert.txt", "postfix37-rcpt-null-sender.txt"} {
		ex, err := os.ReadFile(filepath.Join("../../examples/requests", f))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := os.ReadFile(filepath.Join("../../engine/testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ex, rec) {
			t.Errorf("examples/requests/%s differs from the recording engine/testdata/%s", f, f)
		}
	}
	out, errOut, code := runCLI(t, "query", "--table", "../../examples/table", "--inbound", "--request", "../../examples/requests/postfix37-rcpt-plain.txt", "--explain")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "inbound-example-request.txt", out)
}
