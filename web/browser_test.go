package web

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
	"github.com/tlspolicyd/tlspolicyd/outbound"
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

// geometryScript measures, in the rendered page, where each table's header
// texts and cell contents sit (Range boxes of their contents) and writes
// it as JSON into <pre id="geom">.
const geometryScript = `<script>
(function () {
  function box(el) { var r = document.createRange(); r.selectNodeContents(el); var b = r.getBoundingClientRect(); return {text: el.textContent.trim(), left: b.left, right: b.right}; }
  var out = [];
  document.querySelectorAll("table").forEach(function (t) {
    var h = t.previousElementSibling;
    while (h && h.tagName !== "H2") { h = h.previousElementSibling; }
    var heads = [].map.call(t.querySelectorAll("thead th"), function (th) { var b = box(th); b.num = th.classList.contains("num"); return b; });
    var rows = [];
    t.querySelectorAll("tbody tr").forEach(function (tr) { var tds = tr.querySelectorAll("td"); if (tds.length > 1) { rows.push([].map.call(tds, box)); } });
    out.push({title: h ? h.firstChild.textContent.trim() : "", heads: heads, rows: rows});
  });
  var pre = document.createElement("pre"); pre.id = "geom"; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
})();
</script>`

type cellBox struct {
	Text        string
	Left, Right float64
	Num         bool
}

type tableGeometry struct {
	Title string
	Heads []cellBox
	Rows  [][]cellBox
}

// TestStatusPageColumnsAlignInChromium renders the status page in Chromium
// and checks, by x-position, that every cell sits under its header: a
// numeric column's numbers end where its header ends (right-aligned, both),
// a text column's cells start where its header starts, and every row has as
// many cells as the header. The page forbids scripts (CSP), so the test
// serves the page's own HTML, with a measuring script added, from a server
// of its own.
func TestStatusPageColumnsAlignInChromium(t *testing.T) {
	bin := chromium(t)
	f := newFixtureAt(t, true, time.Now())
	f.traffic(t)
	ctx := context.Background()
	for i, s := range []string{"alice@bank.example", "x@pilot.example", "n@news.example"} {
		for j := range 1 + 40*i {
			f.pd.Check(ctx, request("sender="+s, fmt.Sprintf("instance=g%d-%d", i, j), "encryption_protocol=TLSv1.3"))
		}
	}
	// The same engine, with Postfix's log followed too (its own table).
	var asked time.Time
	stuck := f.now.Add(-time.Hour)
	ob := fakeOutbound{since: &asked, rows: []outbound.DomainReport{
		{Domain: "bank.example", Counts: outbound.Counts{Messages: 1200, Sent: 1180, TLS: 1180, Verified: 1100, Trusted: 80, Versions: map[string]uint64{"TLSv1.3": 1180}}},
		{Domain: "plain.example", Counts: outbound.Counts{Messages: 7, Deferred: 7, Deferrals: map[string]uint64{"starttls_not_offered": 7}},
			Stuck: 3, StuckSince: &stuck, StuckReason: "TLS is required, but was not offered by host mx.plain.example[192.0.2.7]"},
	}}
	full := httptest.NewServer(New(Options{Engine: f.eng, Probes: probesAt(f.now), Metrics: f.m, Logger: quiet(),
		Started: f.now.Add(-48 * time.Hour), Hostname: "mx1.ourcorp.example", Now: func() time.Time { return f.now },
		Outbound: ob, Maillog: "/var/log/mail.log", Sources: sourcesAt(t, f.now)}))
	defer full.Close()
	_, _, page := get(t, full.URL+"/")
	measured := strings.Replace(page, "</body>", geometryScript+"</body>", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, measured)
	}))
	defer srv.Close()
	dom := string(runChromium(t, bin, srv.URL+"/", "--dump-dom", "--window-size=1280,1400"))
	_, after, ok := strings.Cut(dom, `<pre id="geom">`)
	js, _, ok2 := strings.Cut(after, "</pre>")
	if !ok || !ok2 {
		t.Fatalf("no geometry in the rendered DOM:\n%.2000s", dom)
	}
	var tables []tableGeometry
	if err := json.Unmarshal([]byte(html.UnescapeString(js)), &tables); err != nil {
		t.Fatalf("geometry: %v\n%s", err, js)
	}
	const slack = 2.0 // px
	checked := map[string]int{}
	for _, tg := range tables {
		for ri, row := range tg.Rows {
			if len(row) != len(tg.Heads) {
				t.Errorf("%s: row %d has %d cells under %d headers", tg.Title, ri, len(row), len(tg.Heads))
				continue
			}
			for ci, c := range row {
				h := tg.Heads[ci]
				if c.Text == "" || h.Text == "" {
					continue
				}
				checked[tg.Title]++
				if h.Num {
					if d := math.Abs(h.Right - c.Right); d > slack {
						t.Errorf("%s: column %q: %q ends at x=%.0f, its header at x=%.0f (numbers must line up under a right-aligned header)",
							tg.Title, h.Text, c.Text, c.Right, h.Right)
					}
				} else if d := math.Abs(h.Left - c.Left); d > slack {
					t.Errorf("%s: column %q: %q starts at x=%.0f, its header at x=%.0f", tg.Title, h.Text, c.Text, c.Left, h.Left)
				}
			}
		}
	}
	if checked["Inbound TLS by sender domain"] < 12 || checked["Outbound"] < 8 || checked["Outbound TLS by destination domain"] < 10 || checked["DANE and MTA-STS"] < 20 {
		t.Errorf("too few cells checked: %v", checked)
	}
}
