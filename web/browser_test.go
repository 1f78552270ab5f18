package web

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the status page screenshot to docs/status-page.png")

// chromium finds a headless-capable Chromium, or skips the test (fails it
// where end-to-end tests are required: internal/e2e).
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		e2e.Skipf(t, "-short: no browser")
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	e2e.Skipf(t, "Chromium not installed (Debian: apt-get install -y chromium)")
	return ""
}

// runChromium runs a headless Chromium on url with extra arguments, with no
// network but loopback worth mentioning (background services disabled).
func runChromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
		"--disable-extensions", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestStatusPageInChromium renders the status page in a real browser: the
// DOM it builds must hold the table, the probe verdicts, the inbound
// activity and the events, and a screenshot must come out.
// go test ./web -run Chromium -update-screenshot refreshes docs/status-page.png.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	now := time.Now()
	f := newFixtureAt(t, true, now)
	f.traffic(t)
	ctx := context.Background()
	for i, s := range []string{"alice@bank.example", "bob@bank.example", "x@pilot.example", "y@shop.example", "z@news.example", "n@news.example"} {
		tls := "encryption_protocol=TLSv1.3"
		if i%3 == 0 {
			tls = "encryption_protocol=TLSv1.2"
		}
		for j := range 3 + 7*i {
			f.pd.Check(ctx, request("sender="+s, fmt.Sprintf("instance=b%d-%d", i, j), tls))
		}
	}
	f.ring.Publish(events.Event{Kind: events.CertExpiring, Domain: "bank.example", Rule: "bank.example", Source: "testdata/table.yaml:4",
		Reason: "certificate of mx.bank.example[192.0.2.1] for bank.example expires " + now.Add(8*24*time.Hour).UTC().Format("2006-01-02") + " (in 8 days); under secure mail will then be deferred"})

	dom := string(runChromium(t, bin, f.srv.URL+"/", "--dump-dom"))
	for _, want := range []string{"<h1>tlspolicyd", "partner.example", "encrypt fails", "secure ok", "bank-partners",
		"Inbound TLS by sender domain", "news.example", "cert_expiring", "inbound_blocked", "</table>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	runChromium(t, bin, f.srv.URL+"/", "--screenshot="+shot, "--window-size=1280,1400")
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if w := img.Bounds().Dx(); w < 1000 {
		t.Errorf("screenshot %d px wide", w)
	}
	if *updateScreenshot {
		dst := filepath.Join("..", "docs", "status-page.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
