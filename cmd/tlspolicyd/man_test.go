package main

import (
	"strings"
	"testing"
	"time"
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
	// "help" first: it used to make urfave/cli's global help command its
	// own subcommand, and the page generator then never returned.
	runCLI(t, "help")
	runCLI(t, "help", "query")
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := runCLI(t, "man")
		done <- result{out, errOut, code}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("tlspolicyd man did not return within 30 s")
	}
	out, errOut, code := r.out, r.errOut, r.code
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
