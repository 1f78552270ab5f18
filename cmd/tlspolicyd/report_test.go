package main

import (
	"context"
	"encoding/json"
	"fmt"
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
	rotated := t0.Add(-20 * time.Hour)
	return web.Report{
		Host: "mx1.ourcorp.example", Generated: t0, Since: t0.Add(-24 * time.Hour), InboundSince: t0.Add(-72 * time.Hour), TableLoaded: true,
		EventTotals:   map[events.Kind]int{events.InboundBlocked: 3, events.OutboundProbeFailed: 1},
		EventCoverage: web.EventCoverage{EventsSource: "log", EventsRotatedBefore: &rotated},
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
					Check: "encrypt", CheckOK: ptrBool(false), Probe: &web.ProbeView{Target: "lawfirm.example", Status: "no-starttls", Time: t0.Add(-10 * time.Minute)},
					CheckReason: "enforcing encrypt for lawfirm.example would defer mail: mx.lawfirm.example[192.0.2.7]: no STARTTLS"}}},
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

// The report says what of the period its event counts may lack.
func TestReportCoverageNotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cov  web.EventCoverage
		want []string // lines, in order
		not  []string
	}{
		{"the event log holds the period", web.EventCoverage{EventsSource: "log"}, nil,
			[]string{"rotated away", "in memory", "could not be read"}},
		{"no event log", web.EventCoverage{EventsSource: "ring", EventsRingCap: 1000},
			[]string{"Events counted in memory (no event log, log.events): the latest 1000 events only."}, []string{"rotated away"}},
		{"rotated away", web.EventCoverage{EventsSource: "log", EventsRotatedBefore: ptrTime(time.Date(2026, 4, 30, 20, 0, 0, 0, time.UTC))},
			[]string{"Events before 2026-04-30 20:00 UTC were rotated away (log.events_keep, log.events_max_mb): not counted."}, []string{"in memory"}},
		{"unreadable", web.EventCoverage{EventsSource: "log", EventsError: "event log /var/lib/tlspolicyd/events.jsonl.2: input/output error\n"},
			[]string{"WARNING: the event log could not be read (event log /var/lib/tlspolicyd/events.jsonl.2: input/output error ): the counts lack what it holds."}, nil},
		{"a daemon that does not say", web.EventCoverage{}, nil, []string{"rotated away", "in memory", "could not be read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := cannedReport()
			rep.EventCoverage = tc.cov
			var b strings.Builder
			if err := printReport(&b, &rep, "24h"); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, "\n"+w+"\n") {
					t.Errorf("lacks the line %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("says %q:\n%s", n, out)
				}
			}
		})
	}
}

func ptrTime(t time.Time) *time.Time { return &t }

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
		req := policyd.NewRequest(map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT", "sender": "alice@bank.example",
			"recipient": "bob@ourcorp.example", "client_address": "192.0.2.1", "client_name": "mx.bank.example",
			"encryption_protocol": tls, "instance": string(rune('a' + i))})
		if _, err := eng.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	probes := probeList{{Target: "lawfirm.example", Status: probe.StatusNoSTARTTLS, Time: now, Expires: now.Add(time.Hour),
		Levels: map[string]probe.LevelVerdict{"may": {OK: true}, "encrypt": {OK: false}}}}
	out := reportOf(t, eng, probes)
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
	if got := find("lawfirm.example "); !strings.Contains(got, "encrypt [testing] encrypt would defer [1]") {
		t.Errorf("lawfirm.example row: %q", got)
	}
	if !strings.Contains(out, "\n  [1] lawfirm.example: enforcing encrypt for lawfirm.example would defer mail") {
		t.Errorf("the reason of lawfirm.example's verdict is not below the table:\n%s", out)
	}
	if !strings.Contains(out, "TLS report of mx1.test") || !strings.Contains(out, "Events (1: inbound_blocked:1), newest first:") ||
		!strings.Contains(out, "Events counted in memory (no event log, log.events): the latest 100 events only.") {
		t.Errorf("report:\n%s", out)
	}
}

// reportOf runs `tlspolicyd report` against the real /api/report of
// package web serving eng, over a unix socket as listen.http: unix:/path
// allows, and returns its output.
func reportOf(t *testing.T, eng *engine.Engine, probes probeList) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "http.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &http.Server{Handler: web.New(web.Options{Engine: eng, Probes: probes, Logger: quiet, Hostname: "mx1.test"})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	out, errOut, code := runCLI(t, "report", "--server", "unix:"+sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	return out
}

// With the event log on, the report counts the period's events from its
// files: a would-block event of pilot.example, then 250 blocked messages
// from bank.example through a ring of 100, all count; the list says it
// shows some of them.
func TestReportCountsBeyondTheRing(t *testing.T) {
	s, err := store.Load("testdata/table")
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	evlog, err := events.OpenLog(filepath.Join(t.TempDir(), "events.jsonl"), events.LogOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer evlog.Close()
	ring := events.NewRing(100)
	if err := evlog.Attach(ring); err != nil {
		t.Fatal(err)
	}
	eng := engine.New(s, nil, ring, quiet)
	for i := range 251 {
		sender := "alice@bank.example"
		if i == 0 {
			sender = "p@pilot.example"
		}
		req := policyd.NewRequest(map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT", "sender": sender,
			"recipient": "bob@ourcorp.example", "client_address": "192.0.2.1", "client_name": "mx.bank.example",
			"instance": fmt.Sprint(i)})
		if _, err := eng.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if err := evlog.Close(); err != nil { // every event written: none is in the queue only
		t.Fatal(err)
	}
	out := reportOf(t, eng, nil)
	for _, want := range []string{
		"Events (251: inbound_blocked:250 inbound_would_block:1), newest first: showing the latest 21 of 251",
		"inbound_blocked:250\n",
		"inbound_would_block:1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "in memory") || strings.Contains(out, "rotated away") {
		t.Errorf("report doubts its counts:\n%s", out)
	}
}

type probeList []*probe.Result

func (p probeList) All() []*probe.Result { return p }

// TestReportVerdictLines: every verdict the LAST PROBE column can show, in
// a golden file; a failing check names why (below the table), never the
// probe's status as if it were the failure ("verify FAILS: ok").
func TestReportVerdictLines(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	pv := func(target, status, reason string) *web.ProbeView {
		return &web.ProbeView{Target: target, Status: status, Reason: reason, Time: t0.Add(-time.Hour)}
	}
	entry := func(key, policy, check string, ok *bool, testing bool, p *web.ProbeView, why string) web.ReportEntry {
		return web.ReportEntry{Section: "outbound", EntryView: web.EntryView{Key: key, Policy: policy, Check: check, CheckOK: ok,
			Testing: testing, Probe: p, CheckReason: why}}
	}
	rep := web.Report{Host: "mx1.ourcorp.example", Generated: t0, Since: t0.Add(-24 * time.Hour), InboundSince: t0.Add(-24 * time.Hour),
		TableLoaded: true, EventTotals: map[events.Kind]int{}, EventCoverage: web.EventCoverage{EventsSource: "log"},
		Domains: []web.ReportDomain{
			{Domain: "ok.example", Outbound: []web.ReportEntry{entry("ok.example", "secure", "secure", ptrBool(true), false, pv("ok.example", "ok", ""), "")}},
			{Domain: "untrusted.example", Outbound: []web.ReportEntry{entry("untrusted.example", "verify", "verify", ptrBool(false), false,
				pv("untrusted.example", "ok", "verify would fail: mx.untrusted.example[192.0.2.3]: certificate not trusted"),
				"mail to untrusted.example is deferred: policy verify cannot be met: mx.untrusted.example[192.0.2.3]: certificate not trusted")}},
			{Domain: "oldtls.example", Outbound: []web.ReportEntry{entry("oldtls.example", "encrypt protocols=>=TLSv1.3", "encrypt", ptrBool(false), true,
				pv("oldtls.example", "ok", ""), "enforcing encrypt protocols=>=TLSv1.3 for oldtls.example would defer mail: mx.oldtls.example[192.0.2.4]: highest TLS version TLSv1.2")}},
			{Domain: "down.example", Outbound: []web.ReportEntry{entry("down.example", "encrypt", "encrypt", nil, false,
				pv("down.example", "temporary", "MX lookup failed: SERVFAIL"), "")}},
			{Domain: "dane.example", Outbound: []web.ReportEntry{entry("dane.example", "dane", "", nil, false, pv("dane.example", "ok", ""), "")}},
			{Domain: "new.example", Outbound: []web.ReportEntry{entry("new.example", "encrypt", "encrypt", nil, false, nil, "")}},
			{Domain: "partner.example", Outbound: []web.ReportEntry{{Section: "recipients", EntryView: web.EntryView{Key: "cfo@partner.example", Policy: "encrypt"}}}},
		}}
	var b strings.Builder
	if err := printReport(&b, &rep, "24h"); err != nil {
		t.Fatal(err)
	}
	golden(t, "report-verdicts.txt", b.String())
	if strings.Contains(b.String(), "FAILS: ok") {
		t.Error("a failing check is worded with the probe's status")
	}
}
