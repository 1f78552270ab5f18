package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/internal/maillogtest"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// TestTLSRPTDryRun: `tlsrpt --dry-run` prints the report of each domain
// publishing _smtp._tls, from the state the daemon saved, and sends nothing.
func TestTLSRPTDryRun(t *testing.T) {
	dir := t.TempDir()
	tr := maillogtest.Recorded(t, "testdata/postfix37-maillog-tls.txt")
	if err := tr.Save(filepath.Join(dir, "outbound.json")); err != nil {
		t.Fatal(err)
	}
	zone := probetest.NewZone(t)
	zone.Add(t, `_smtp._tls.plain.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@plain.example"`)
	cfg := filepath.Join(dir, "tlspolicyd.yaml")
	os.WriteFile(cfg, []byte(`table: `+dir+`/table.yaml
probe: {resolver: "`+zone.Addr+`", cache: ""}
log: {events: `+dir+`/events.jsonl}
alerts: {smtp: "127.0.0.1:1"}
sources: {dane: false, mta_sts: false}
maillog: /var/log/mail.log
tlsrpt: {enabled: true, organization: Ourcorp, contact: postmaster@ourcorp.example}
`), 0o644)
	out, errOut, code := runCLI(t, "tlsrpt", "--config", cfg, "--dry-run", "--day", "2026-12-07")
	if code != 0 || !strings.Contains(out, "# plain.example: ") || !strings.Contains(out, "!plain.example!1796601600!1796687999.json.gz") ||
		!strings.Contains(out, "to mailto:tlsrpt@plain.example") || !strings.Contains(out, `"result-type": "starttls-not-supported"`) ||
		!strings.Contains(out, `"organization-name": "Ourcorp"`) || strings.Contains(out, "verifyfail.example") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
	// Without --dry-run it sends: the relay (a closed port) fails, exit 1.
	_, errOut, code = runCLI(t, "tlsrpt", "--config", cfg, "--day", "2026-12-07")
	if code != 1 || !strings.Contains(errOut, "mail relay 127.0.0.1:1") {
		t.Errorf("send to a dead relay: exit %d, %s", code, errOut)
	}
	// serve refuses tlsrpt without maillog.
	_, errOut, code = runCLI(t, "serve", "--config", cfg, "--table", "testdata/table", "--maillog", "", "--http", "", "--policyd", "", "--socketmap", "127.0.0.1:0")
	if code != 2 || !strings.Contains(errOut, "tlsrpt.enabled needs maillog") {
		t.Errorf("serve --tlsrpt without maillog: exit %d, %s", code, errOut)
	}
}
