package main

import (
	"strings"
	"testing"
)

// TestVersion: --version and the version command print the version set at
// build time (-ldflags -X main.version=…), which packaging/build-deb.sh
// also gives the .deb.
func TestVersion(t *testing.T) {
	old := version
	version = "1.2.3~test"
	t.Cleanup(func() { version = old })
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}} {
		out, errOut, code := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "1.2.3~test") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want the version 1.2.3~test", args, code, out, errOut)
		}
	}
}

// TestManPage: the hidden man command renders tlspolicyd(8) from the CLI's
// help: every visible command and its flags are in it, and it is roff.
func TestManPage(t *testing.T) {
	out, errOut, code := runCLI(t, "man")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, ".nh\n.TH tlspolicyd 8") {
		t.Errorf("man page does not start as a section 8 roff page:\n%.200s", out)
	}
	for _, want := range []string{".SH serve", ".SH query", ".SH check", ".SH report", ".SH probe", "--config", "--probe-cache", "smtp_tls_policy_maps"} {
		if !strings.Contains(out, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(out, ".SH man") {
		t.Error("man page lists the hidden man command")
	}
}
