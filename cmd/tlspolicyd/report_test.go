package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
	"github.com/tlspolicyd/tlspolicyd/web"
)

func ptrBool(b bool) *bool { return &b }

// cannedReport is a fixed /api/report answer, so the text output can be
// compared with a golden file.
func cannedReport() web.Report {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	blocked := events.Event{Time: t0.Add(-2 * time.Hour), Kind: events.InboundBlocked, Domain: "bank.example", Rule: "bank-partners",
		Source: "table/inbound.yaml:3", Action: "450 4.7.10 TLS 1.2 or newer is required for mail from bank.example",
		Reason: "TLS 1.2 or newer is required; the connection was not encrypted", Sender: "alice@bank.example"}
	failed := events.Event{Time: t0.Add(-10 * time.Minute), Kind: events.OutboundProbeFailed, Domain: "lawfirm.example", Rule: "lawfirm.example",
		Source: "table/partners.yaml:9", Action: "testing", Reason: "enforcing encrypt for lawfirm.example would defer mail: mx.lawfirm.example[192.0.2.7]: no STARTTLS"}
	return web.Report{
		Host: "mx1.ourcorp.example", Generated: t0, Since: t0.Add(-24 * time.Hour), InboundSince: t0.Add(-72 * time.Hour), TableLoaded: true,
		EventTotals: map[events.Kind]int{events.InboundBlocked: 3, events.OutboundProbeFailed: 1},
		Domains: []web.ReportDomain{
			{Domain: "bank.example",
				Inbound: &web.InboundCounts{WithTLS: 120, WithoutTLS: 3, Versions: map[string]uint64{"TLSv1.3": 100, "TLSv1.2": 20}},
				Outbound: []web.ReportEntry{
					{Section: "outbound", EntryView: web.EntryView{Key: "bank.example", Policy: "secure match=nexthop:dot-nexthop", Check: "secure", CheckOK: ptrBool(true),
						Probe: &web.ProbeView{Target: "bank.example", Status: "ok", Time: t0.Add(-time.Hour)}}},
					{Section: "outbound", EntryView: web.EntryView{Key: ".bank.example", Policy: "encrypt", Check: "encrypt"}},
				},
				Counts: map[string]int{"inbound_blocked": 3}, Events: []events.Event{blocked}},
			{Domain: "lawfirm.example",
				Outbound: []web.ReportEntry{{Section: "outbound", EntryView: web.EntryView{Key: "lawfirm.example", Policy: "encrypt", Testing: true,
					Check: "encrypt", CheckOK: ptrBool(false), Probe: &web.ProbeView{Target: "lawfirm.example", Status: "no-starttls", Time: t0.Add(-10 * time.Minute)}}}},
				Counts: map[string]int{"outbound_probe_failed": 1}, Events: []events.Event{failed}},
			{Domain: "news.example", Inbound: &web.InboundCounts{WithTLS: 40, Versions: map[string]uint64{"TLSv1.3": 40}}},
			{Domain: "partner.example",
				Outbound: []web.ReportEntry{{Section: "recipients", EntryView: web.EntryView{Key: "cfo@partner.example", Policy: "encrypt"}}}},
			{Domain: "smtp.partner.example",
				Outbound: []web.ReportEntry{{Section: "outbound", EntryView: web.EntryView{Key: "[smtp.partner.example]:587", Policy: "verify", Check: "verify"}}}},
		},
	}
}

// canned serves rep at /api/report and records the since it was asked.
func canned(t *testing.T, rep any, status int) (*httptest.Server, *string) {
	t.Helper()
	var since string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/report" {
			http.NotFound(w, r)
			return
		}
		since = r.URL.Query().Get("since")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(rep)
	}))
	t.Cleanup(srv.Close)
	return srv, &since
}

func TestReportCommand(t *testing.T) {
	srv, since := canned(t, cannedReport(), 200)
	out, errOut, code := runCLI(t, "report", "--server", srv.URL, "--since", "7d")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if *since != "7d" {
		t.Errorf("asked since=%q, want 7d", *since)
	}
	golden(t, "report.txt", out)

	// host:port without a scheme works too, and --json passes the JSON through.
	out, errOut, code = runCLI(t, "report", "--server", strings.TrimPrefix(srv.URL, "http://"), "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	var rep web.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Domains) != 5 || *since != "24h" {
		t.Fatalf("--json output (%v, since %q):\n%s", err, *since, out)
	}
}

func TestReportErrors(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	bad, _ := canned(t, map[string]string{"error": `since "x": want a duration (24h, 7d) or an RFC 3339 time`}, 400)
	notReport, _ := canned(t, []int{1, 2}, 200)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"daemon down", []string{"--server", downURL}, 1, "is the daemon running with listen.http?"},
		{"bad since", []string{"--since", "yesterday"}, 2, "want a duration"},
		{"bad server", []string{"--server", "ftp://x"}, 2, "--server"},
		{"api error", []string{"--server", bad.URL}, 1, "400 Bad Request: since"},
		{"not a report", []string{"--server", notReport.URL}, 1, "not a report"},
		{"arguments", []string{"bank.example"}, 2, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := runCLI(t, append([]string{"report"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.stderr)
			}
		})
	}
}

// End to end: the real /api/report of package web, over a unix socket as
// listen.http: unix:/path allows, with traffic through a real engine.
func TestReportAgainstDaemonAPI(t *testing.T) {
	s, err := store.Load("testdata/table")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := engine.New(s, nil, events.NewRing(100), quiet)
	ctx := context.Background()
	for i, tls := range []string{"", "TLSv1.3", "TLSv1.3", "TLSv1.2"} {
		req := policyd.NewRequest(map[string]string{"request": "smtpd_access_policy", "sender": "alice@bank.example",
			"recipient": "bob@ourcorp.example", "client_address": "192.0.2.1", "client_name": "mx.bank.example",
			"encryption_protocol": tls, "instance": string(rune('a' + i))})
		if _, err := eng.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	probes := probeList{{Target: "lawfirm.example", Status: probe.StatusNoSTARTTLS, Time: now, Expires: now.Add(time.Hour),
		Levels: map[string]probe.LevelVerdict{"may": {OK: true}, "encrypt": {OK: false}}}}

	sock := filepath.Join(t.TempDir(), "http.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: web.New(web.Options{Engine: eng, Probes: probes, Logger: quiet, Hostname: "mx1.test"})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	out, errOut, code := runCLI(t, "report", "--server", "unix:"+sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		t.Errorf("no line starting with %q in:\n%s", prefix, out)
		return ""
	}
	if got := find("bank.example "); !strings.HasPrefix(got, "bank.example 3 1 TLSv1.3:2 TLSv1.2:1 secure match=nexthop:dot-nexthop protocols=>=TLSv1.2 not probed inbound_blocked:1") {
		t.Errorf("bank.example row: %q", got)
	}
	if got := find("lawfirm.example "); !strings.Contains(got, "encrypt [testing] encrypt FAILS: no-starttls") {
		t.Errorf("lawfirm.example row: %q", got)
	}
	if !strings.Contains(out, "TLS report of mx1.test") || !strings.Contains(out, "Events (1: inbound_blocked:1), newest first") {
		t.Errorf("report:\n%s", out)
	}
}

type probeList []*probe.Result

func (p probeList) All() []*probe.Result { return p }
