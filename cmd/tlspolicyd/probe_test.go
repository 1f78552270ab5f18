package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// probeWorld starts an in-process DNS zone and fake MX servers on loopback:
// tls.example (STARTTLS, certificate from a CA the system does not trust),
// plain.example (no STARTTLS) and mixed.example (one of each).
func probeWorld(t *testing.T) (resolver string, port int) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	f := probetest.NewFarm(t, ca)
	f.GoodMX(t, "127.0.0.31", time.Time{}, "mx.tls.example")
	f.PlainMX(t, "127.0.0.32")
	z.MX(t, "tls.example", 10, "mx.tls.example", "127.0.0.31")
	z.MX(t, "plain.example", 10, "mx.plain.example", "127.0.0.32")
	z.MX(t, "mixed.example", 10, "mx1.mixed.example", "127.0.0.31")
	z.MX(t, "mixed.example", 20, "mx2.mixed.example", "127.0.0.32")
	return z.Addr, f.Port
}

func TestProbeCommand(t *testing.T) {
	resolver, port := probeWorld(t)
	base := []string{"probe", "--resolver", resolver, "--port", strconv.Itoa(port), "--allow-private", "--timeout", "3s", "--helo", "test.invalid"}
	tests := []struct {
		name    string
		args    []string
		code    int
		stdout  []string
		stderr  string
		noWrite bool
	}{
		{"STARTTLS meets encrypt", []string{"tls.example"}, 0, []string{"tls.example: ok", "10 mx.tls.example", "127.0.0.31:" + strconv.Itoa(port), "yes", "TLSv1.3", "encrypt ok", "verify WOULD DEFER"}, "", false},
		{"untrusted certificate fails verify", []string{"--level", "verify", "tls.example"}, 1, []string{"verify WOULD DEFER"}, "", false},
		{"no STARTTLS fails encrypt", []string{"plain.example"}, 1, []string{"plain.example: no-starttls", "may ok; encrypt WOULD DEFER [1]", "[1] mx.plain.example[127.0.0.32]:" + strconv.Itoa(port) + ": no STARTTLS offered"}, "", false},
		{"may works without STARTTLS", []string{"--level", "may", "plain.example"}, 0, []string{"may ok"}, "", false},
		{"one of two MX without STARTTLS", []string{"mixed.example"}, 1, []string{"20 mx2.mixed.example", "encrypt WOULD DEFER"}, "", false},
		{"several targets: all must pass", []string{"tls.example", "plain.example"}, 1, []string{"tls.example: ok", "plain.example: no-starttls"}, "", false},
		{"bracketed host", []string{"[127.0.0.31]:" + strconv.Itoa(port)}, 0, []string{"encrypt ok"}, "", false},
		{"NXDOMAIN is a bounce, not a deferral", []string{"nonexistent.example"}, 1,
			[]string{"nonexistent.example: unreachable", "verdict: no such domain (NXDOMAIN): Postfix bounces mail to it"}, "", false},
		{"bad level", []string{"--level", "bogus", "tls.example"}, 2, nil, "--level", true},
		{"no target", nil, 2, nil, "no TARGET", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, append(append([]string{}, base...), tt.args...)...)
			if code != tt.code {
				t.Errorf("exit = %d, want %d\n%s%s", code, tt.code, out, errOut)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			if tt.stderr != "" && !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr = %q, want %q", errOut, tt.stderr)
			}
		})
	}
	out, _, code := runCLI(t, append(base, "--json", "plain.example")...)
	var res []probe.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || len(res) != 1 || res[0].Status != probe.StatusNoSTARTTLS {
		t.Errorf("--json: code %d err %v %+v", code, err, res)
	}
}

func TestProbePrivateTargetRefusedByDefault(t *testing.T) {
	resolver, port := probeWorld(t)
	out, _, code := runCLI(t, "probe", "--resolver", resolver, "--port", strconv.Itoa(port), "--timeout", "3s", "tls.example")
	if code != 1 || !strings.Contains(out, "unreachable") || !strings.Contains(out, "refused: not public [1]") ||
		!strings.Contains(out, "(--allow-private probes it, for tests)") || strings.Contains(out, "allow_private") {
		t.Errorf("loopback MX without --allow-private: exit %d\n%s", code, out)
	}
}

// TestCheckProbeNamesTheFlag: check --probe without --allow-private on a
// private MX says which flag allows it, not the configuration key.
func TestCheckProbeNamesTheFlag(t *testing.T) {
	resolver, port := probeWorld(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t.yaml"), []byte("outbound:\n  tls.example: encrypt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, _ := runCLI(t, "check", "--table", dir, "--probe", "--resolver", resolver, "--port", strconv.Itoa(port), "--timeout", "3s")
	if !strings.Contains(errOut, "t.yaml:2: warning: could not check tls.example (encrypt): ") ||
		!strings.Contains(errOut, "(--allow-private probes it, for tests)") || strings.Contains(errOut, "allow_private") {
		t.Errorf("stderr:\n%s", errOut)
	}
}

func TestCheckProbeWarnsAboutDeferrals(t *testing.T) {
	resolver, port := probeWorld(t)
	dir := t.TempDir()
	table := `outbound:
  tls.example: encrypt
  plain.example:
    policy: encrypt
    testing: true
  mixed.example: encrypt
  .parent.example: encrypt
  goood.example: verify
`
	if err := os.WriteFile(filepath.Join(dir, "t.yaml"), []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "check", "--table", dir, "--probe", "--resolver", resolver, "--port", strconv.Itoa(port), "--allow-private", "--timeout", "3s")
	if code != 0 {
		t.Fatalf("exit %d (warnings must not fail check)\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"t.yaml:3: warning: enforcing encrypt for plain.example would defer mail: mx.plain.example[127.0.0.32]",
		// mixed.example's primary MX offers STARTTLS, its backup does
		// not: Postfix delivers through the primary.
		"t.yaml:6: warning: a backup MX of mixed.example cannot meet policy encrypt: mx2.mixed.example[127.0.0.32]:" + strconv.Itoa(port) +
			": no STARTTLS offered; mail is delivered through mx1.mixed.example[127.0.0.31]:" + strconv.Itoa(port),
		// A destination the probe cannot judge (here: no such domain)
		// is a warning too, not a silent pass.
		"t.yaml:8: warning: could not check goood.example (verify): unreachable: ",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "tls.example") {
		t.Errorf("tls.example works and must not be warned about:\n%s", errOut)
	}
	if !strings.Contains(out, "3 warning(s)") {
		t.Errorf("summary: %s", out)
	}
}

// TestQueryExplainShowsLearnedPolicy: query reads the daemon's probe cache
// and --explain says a probe result decided the answer.
func TestQueryExplainShowsLearnedPolicy(t *testing.T) {
	resolver, port := probeWorld(t)
	p := probe.New(probe.Config{Resolver: resolver, Port: port, AllowPrivate: true, Timeout: 3 * time.Second})
	dir := t.TempDir()
	cachePath := filepath.Join(dir, "probes.json")
	c, err := srccache.New(srccache.Options{Path: cachePath})
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Probe(context.Background(), "tls.example")
	if err != nil {
		t.Fatal(err)
	}
	srccache.NewProbes(c, nil, srccache.ProbesOptions{}).Put(r)
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(table, []byte("defaults:\n  learn: enforce\noutbound:\n  other.example: verify\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "query", "--table", table, "--probe-cache", cachePath, "--explain", "tls.example", "plain.example")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"tls.example\tOK encrypt", "step 5, learned from the probe cache", "every reachable MX offered STARTTLS", "plain.example\tNOTFOUND"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
