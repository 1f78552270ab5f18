package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCheckProbeAddressEntries: check --probe probes the domains of
// recipients: and senders: entries too, so mail that their floor defers
// is a warning, not "0 warning(s)".
func TestCheckProbeAddressEntries(t *testing.T) {
	resolver, port := probeWorld(t)
	dir := t.TempDir()
	table := `recipients:
  cfo@plain.example: encrypt
  ceo@tls.example: encrypt
senders:
  compliance@plain.example: encrypt
`
	if err := os.WriteFile(filepath.Join(dir, "t.yaml"), []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "check", "--table", dir, "--probe", "--resolver", resolver, "--port", strconv.Itoa(port), "--allow-private", "--timeout", "3s")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"t.yaml:2: warning: mail to cfo@plain.example is deferred: policy encrypt cannot be met: mx.plain.example[127.0.0.32]",
		"t.yaml:5: warning: mail from compliance@plain.example to plain.example is deferred: policy encrypt cannot be met",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "tls.example") || !strings.Contains(out, "2 warning(s)") {
		t.Errorf("want exactly the two warnings:\n%s%s", out, errOut)
	}
}
