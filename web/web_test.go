package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/store"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type fakeProbes []*probe.Result

func (f fakeProbes) All() []*probe.Result { return f }

func probesAt(now time.Time) fakeProbes {
	cert := now.Add(8 * 24 * time.Hour).Truncate(24 * time.Hour)
	tlsAddr := func(v string, names ...string) []probe.MXResult {
		return []probe.MXResult{{Host: "mx.example", Addrs: []probe.AddrResult{{Addr: "192.0.2.1", Reached: true, STARTTLS: true,
			TLS: &probe.TLSInfo{Version: v, Trusted: len(names) > 0, Chain: []probe.CertInfo{{NotAfter: cert, DNSNames: names}}}}}}}
	}
	lv := func(may, enc, ver, sec bool) map[string]probe.LevelVerdict {
		return map[string]probe.LevelVerdict{"may": {OK: may}, "encrypt": {OK: enc}, "verify": {OK: ver}, "secure": {OK: sec}}
	}
	return fakeProbes{
		{Target: "partner.example", Status: probe.StatusNoSTARTTLS, Reason: "mx.partner.example[192.0.2.9]: no STARTTLS in EHLO reply",
			Time: now.Add(-3 * time.Hour), Expires: now.Add(21 * time.Hour), Levels: lv(true, false, false, false)},
		{Target: "bank.example", NextHop: "bank.example", Status: probe.StatusOK, Time: now.Add(-time.Hour), Expires: now.Add(23 * time.Hour),
			Levels: lv(true, true, true, true), MX: tlsAddr("TLSv1.3", "mx.example", "bank.example")},
		{Target: "lawfirm.example", Status: probe.StatusOK, Time: now.Add(-2 * time.Hour), Expires: now.Add(22 * time.Hour),
			Levels: lv(true, true, false, false), MX: tlsAddr("TLSv1.2")},
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type fixture struct {
	eng  *engine.Engine
	m    *Metrics
	srv  *httptest.Server
	sm   socketmap.Handler
	pd   policyd.Handler
	ring *events.Ring
	now  time.Time
}

func request(attrs ...string) *policyd.Request {
	r := policyd.NewRequest(map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT",
		"recipient": "bob@ourcorp.example", "client_address": "192.0.2.1", "client_name": "mx.bank.example"})
	for _, a := range attrs {
		k, v, _ := strings.Cut(a, "=")
		r.Set(k, v)
	}
	return r
}

// newFixture serves testdata/table.yaml (or no table) through New, with
// traffic already sent through the metrics wrappers.
func newFixture(t *testing.T, withTable bool) *fixture {
	t.Helper()
	return newFixtureAt(t, withTable, now)
}

func newFixtureAt(t *testing.T, withTable bool, now time.Time) *fixture {
	t.Helper()
	ring := events.NewRing(100)
	var s *store.Store
	if withTable {
		var err error
		if s, err = store.Load("testdata/table.yaml"); err != nil {
			t.Fatal(err)
		}
	}
	eng := engine.New(s, nil, ring, quiet())
	m := NewMetrics()
	f := &fixture{eng: eng, m: m, sm: m.Socketmap(eng), pd: m.Policyd(eng), ring: ring, now: now}
	f.srv = httptest.NewServer(New(Options{Engine: eng, Probes: probesAt(now), Metrics: m, Logger: quiet(),
		Started: now.Add(-48 * time.Hour), Hostname: "mx1.ourcorp.example", Now: func() time.Time { return now }}))
	t.Cleanup(f.srv.Close)
	return f
}

// traffic sends lookups and policy requests and publishes events.
func (f *fixture) traffic(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, l := range [][2]string{{"tls_policy", "bank.example"}, {"tls_policy", "sub.bank.example"}, {"tls_policy", "unlisted.example"},
		{"tls_transport", "cfo@partner.example"}, {"bogus_map", "x"}} {
		if _, err := f.sm.Lookup(ctx, l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*policyd.Request{
		request("sender=alice@bank.example", "instance=1"),                                   // defer, no TLS
		request("sender=bob@bank.example", "instance=2", "encryption_protocol=TLSv1.3"),      // dunno
		request("sender=carol@bank.example", "instance=3", "encryption_protocol=TLSv1.3"),    // dunno
		request("sender=p@pilot.example", "instance=4"),                                      // prepend
		request("sender=q@other.example", "instance=5", "encryption_protocol=TLSv1.2"),       // dunno
		request("sender=r@other.example", "instance=6", "encryption_protocol=SSLv3-made-up"), // dunno, tls other
	} {
		if _, err := f.pd.Check(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	f.ring.Publish(events.Event{Time: f.now.Add(-30 * time.Hour), Kind: events.ReloadFailed, Source: "testdata/table.yaml:6",
		Reason: `testdata/table.yaml:6: unknown level "encrpyt"`})
	f.ring.Publish(events.Event{Time: f.now.Add(-10 * time.Minute), Kind: events.OutboundProbeFailed, Domain: "partner.example",
		Rule: "partner.example", Source: "testdata/table.yaml:6", Action: string(events.OutboundProbeFailed),
		Reason: "mail to partner.example is deferred: policy encrypt cannot be met: no STARTTLS"})
	f.m.Reload(nil)
	f.m.Reload(fmt.Errorf("table.yaml:3: unknown level"))
	for _, st := range []string{"ok", "ok", "no-starttls", "made-up"} {
		f.m.ProbeVerdict(st)
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	code, hdr, body := get(t, url)
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s: %v\n%s", url, err, body)
	}
	return code
}

func TestHealthz(t *testing.T) {
	for _, tc := range []struct {
		table bool
		code  int
	}{{true, 200}, {false, 503}} {
		f := newFixture(t, tc.table)
		if code, _, body := get(t, f.srv.URL+"/healthz"); code != tc.code {
			t.Errorf("table %v: /healthz = %d %q, want %d", tc.table, code, body, tc.code)
		}
		// The status page and /api/table say the same.
		if code, _, _ := get(t, f.srv.URL+"/"); code != tc.code {
			t.Errorf("table %v: / = %d, want %d", tc.table, code, tc.code)
		}
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, true)
	f.traffic(t)
	code, hdr, body := get(t, f.srv.URL+"/metrics")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		`tlspolicyd_socketmap_lookups_total{map="tls_policy",result="OK"} 2`,
		`tlspolicyd_socketmap_lookups_total{map="tls_policy",result="NOTFOUND"} 1`,
		`tlspolicyd_socketmap_lookups_total{map="tls_transport",result="OK"} 1`,
		`tlspolicyd_socketmap_lookups_total{map="other",result="PERM"} 1`,
		`tlspolicyd_socketmap_lookups_total{map="tls_sender_transport",result="TEMP"} 0`,
		`tlspolicyd_socketmap_lookup_duration_seconds_count 5`,
		`tlspolicyd_policy_requests_total{decision="defer",tls="none"} 1`,
		`tlspolicyd_policy_requests_total{decision="dunno",tls="TLSv1.3"} 2`,
		`tlspolicyd_policy_requests_total{decision="dunno",tls="TLSv1.2"} 1`,
		`tlspolicyd_policy_requests_total{decision="dunno",tls="other"} 1`,
		`tlspolicyd_policy_requests_total{decision="prepend",tls="none"} 1`,
		`tlspolicyd_policy_request_duration_seconds_count 6`,
		`tlspolicyd_table_reloads_total 2`,
		`tlspolicyd_table_reload_errors_total 1`,
		`tlspolicyd_table_loaded 1`,
		`tlspolicyd_table_entries{section="outbound"} 5`,
		`tlspolicyd_table_entries{section="inbound"} 2`,
		`tlspolicyd_probe_verdicts_total{status="ok"} 2`,
		`tlspolicyd_probe_verdicts_total{status="no-starttls"} 1`,
		`tlspolicyd_probe_verdicts_total{status="other"} 1`,
		`tlspolicyd_events_total{kind="inbound_blocked"} 1`,
		`tlspolicyd_events_total{kind="inbound_would_block"} 1`,
		`tlspolicyd_events_total{kind="outbound_probe_failed"} 1`,
		`tlspolicyd_events_total{kind="cert_expiring"} 0`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "tlspolicyd_table_last_reload_success_timestamp_seconds 0\n") {
		t.Error("successful reload not timestamped")
	}
}

// Map names come from clients: made-up ones must not create series.
func TestMetricsCardinality(t *testing.T) {
	f := newFixture(t, true)
	for i := range 1000 {
		f.sm.Lookup(context.Background(), fmt.Sprintf("map%d", i), "x")
		f.pd.Check(context.Background(), request("sender=a@b.example", fmt.Sprintf("encryption_protocol=TLSv9.%d", i)))
	}
	_, _, body := get(t, f.srv.URL+"/metrics")
	if n := strings.Count(body, "tlspolicyd_socketmap_lookups_total{"); n != (len(knownMaps)+1)*5 {
		t.Errorf("%d lookup series, want %d", n, (len(knownMaps)+1)*5)
	}
	if !strings.Contains(body, `tlspolicyd_socketmap_lookups_total{map="other",result="PERM"} 1000`) {
		t.Error("made-up map names not counted as other")
	}
	if !strings.Contains(body, `tlspolicyd_policy_requests_total{decision="dunno",tls="other"} 1000`) {
		t.Error("made-up TLS versions not counted as other")
	}
}

// A handler error is what Postfix sees as TEMP (socketmap) or a deferral
// (policy): counted as such, and passed through unchanged.
func TestMetricsHandlerErrors(t *testing.T) {
	m := NewMetrics()
	boom := fmt.Errorf("boom")
	sm := m.Socketmap(socketmap.HandlerFunc(func(context.Context, string, string) (socketmap.Reply, error) { return socketmap.Reply{}, boom }))
	pd := m.Policyd(policyd.HandlerFunc(func(context.Context, *policyd.Request) (policyd.Action, error) { return "", boom }))
	if _, err := sm.Lookup(context.Background(), "tls_policy", "x"); err != boom {
		t.Fatalf("Lookup error = %v", err)
	}
	if _, err := pd.Check(context.Background(), request()); err != boom {
		t.Fatalf("Check error = %v", err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`tlspolicyd_socketmap_lookups_total{map="tls_policy",result="TEMP"} 1`, `tlspolicyd_policy_requests_total{decision="error",tls="none"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("lacks %s", want)
		}
	}
}

func TestDecisionClasses(t *testing.T) {
	for _, tc := range []struct {
		action string
		want   string
	}{
		{"DUNNO", "dunno"}, {"dunno", "dunno"},
		{"450 4.7.10 TLS is required", "defer"}, {"DEFER_IF_PERMIT x", "defer"},
		{"550 5.7.10 TLS is required", "reject"}, {"REJECT", "reject"},
		{"PREPEND X-TLS-Policy: would defer", "prepend"},
		{"OK", "other"}, {"", "other"},
	} {
		if got := decision(policyd.Action(tc.action)); got != tc.want {
			t.Errorf("decision(%q) = %s, want %s", tc.action, got, tc.want)
		}
	}
}

func TestAPITable(t *testing.T) {
	f := newFixture(t, true)
	var tv TableView
	if code := getJSON(t, f.srv.URL+"/api/table", &tv); code != 200 || !tv.Loaded {
		t.Fatalf("code %d loaded %v", code, tv.Loaded)
	}
	by := map[string]EntryView{}
	for _, e := range tv.Outbound {
		by[e.Key] = e
	}
	for _, tc := range []struct {
		key, check string
		ok         *bool
		status     string
	}{
		{"bank.example", "secure", ptr(true), "ok"},
		{"partner.example", "encrypt", ptr(false), "no-starttls"},
		{"lawfirm.example", "encrypt", ptr(true), "ok"},
		{".bank.example", "encrypt", nil, ""},
		{"[smtp.partner.example]:587", "verify", nil, ""},
	} {
		e, found := by[tc.key]
		if !found {
			t.Errorf("%s missing", tc.key)
			continue
		}
		if e.Check != tc.check || fmt.Sprint(deref(e.CheckOK)) != fmt.Sprint(deref(tc.ok)) || (e.CheckOK == nil) != (tc.ok == nil) {
			t.Errorf("%s: check %s ok %v, want %s %v", tc.key, e.Check, deref(e.CheckOK), tc.check, deref(tc.ok))
		}
		if status := ""; e.Probe != nil {
			status = e.Probe.Status
			if status != tc.status {
				t.Errorf("%s: probe status %q, want %q", tc.key, status, tc.status)
			}
		} else if tc.status != "" {
			t.Errorf("%s: no probe", tc.key)
		}
	}
	law := by["lawfirm.example"]
	if !law.Testing || law.ReviewBy != "2027-06-30" || !strings.HasPrefix(law.Note, "contract 2026-14") || !strings.HasSuffix(law.Source, "table.yaml:8") {
		t.Errorf("lawfirm.example = %+v", law)
	}
	if len(tv.Recipients) != 1 || len(tv.Senders) != 1 || len(tv.Inbound) != 2 || tv.Inbound[1].Name != "pilot" || !tv.Inbound[1].Testing {
		t.Errorf("sections: %+v %+v %+v", tv.Recipients, tv.Senders, tv.Inbound)
	}
	if tv.Defaults == nil || tv.Defaults.Learn != "report" {
		t.Errorf("defaults %+v", tv.Defaults)
	}

	f = newFixture(t, false)
	if code := getJSON(t, f.srv.URL+"/api/table", &tv); code != 503 || tv.Loaded {
		t.Errorf("without table: %d %+v", code, tv)
	}
}

func ptr(b bool) *bool { return &b }

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func TestAPIEvents(t *testing.T) {
	f := newFixture(t, true)
	f.traffic(t)
	for _, tc := range []struct {
		query         string
		code          int
		kinds         string
		listed, total int // events listed, and matching in all
	}{
		{"", 200, "outbound_probe_failed", 3, 3}, // default: 24h; the reload failure is 30h old, the inbound ones "now" (real clock: future)
		{"?since=48h", 200, "outbound_probe_failed reload_failed", 4, 4},
		{"?since=2d&kind=reload_failed", 200, "reload_failed", 1, 1},
		{"?since=48h&domain=partner.example", 200, "outbound_probe_failed", 1, 1},
		{"?since=48h&domain=partner.example&limit=1", 200, "outbound_probe_failed", 1, 1},
		{"?since=48h&limit=1", 200, "", 1, 4}, // the newest: an inbound one, on the real clock
		{"?since=2026-04-30T00:00:00Z&kind=outbound_probe_failed", 200, "outbound_probe_failed", 1, 1},
		{"?since=yesterday", 400, "", 0, 0},
		{"?since=-5h", 400, "", 0, 0},
		{"?limit=x", 400, "", 0, 0},
	} {
		var v EventsView
		code := getJSON(t, f.srv.URL+"/api/events"+tc.query, &v)
		if code != tc.code {
			t.Errorf("%s: %d, want %d", tc.query, code, tc.code)
			continue
		}
		if len(v.Events) != tc.listed || v.Total != tc.total {
			t.Errorf("%s: %d events listed of %d, want %d of %d", tc.query, len(v.Events), v.Total, tc.listed, tc.total)
		}
		if code == 200 && (v.EventsSource != "ring" || v.EventsRingCap != 100) {
			t.Errorf("%s: coverage %+v, want the ring of 100 (no event log)", tc.query, v.EventCoverage)
		}
		var kinds []string
		for _, e := range v.Events {
			if e.Time.After(now) {
				continue // published by the engine with the real clock
			}
			kinds = append(kinds, string(e.Kind))
		}
		if strings.Join(kinds, " ") != tc.kinds {
			t.Errorf("%s: kinds %v, want %s", tc.query, kinds, tc.kinds)
		}
	}
}

func TestAPIInboundAndProbes(t *testing.T) {
	f := newFixture(t, true)
	f.traffic(t)
	var in InboundView
	getJSON(t, f.srv.URL+"/api/inbound", &in)
	got := map[string]engine.DomainStats{}
	for _, d := range in.Domains {
		got[d.Domain] = d
	}
	if b := got["bank.example"]; b.WithTLS != 2 || b.WithoutTLS != 1 || b.Versions["TLSv1.3"] != 2 {
		t.Errorf("bank.example: %+v", b)
	}
	if !in.CountedSince.Equal(now.Add(-48 * time.Hour)) {
		t.Errorf("counted_since %v", in.CountedSince)
	}
	var ps []ProbeView
	getJSON(t, f.srv.URL+"/api/probes", &ps)
	if len(ps) != 3 || ps[0].Target != "bank.example" || ps[2].Target != "partner.example" {
		t.Fatalf("probes: %+v", ps)
	}
	if ps[0].CertExpires == nil || ps[0].TLSVersions[0] != "TLSv1.3" || !ps[0].Levels["secure"] {
		t.Errorf("bank.example probe: %+v", ps[0])
	}
}

func TestAPIReport(t *testing.T) {
	f := newFixture(t, true)
	f.traffic(t)
	var rep Report
	if code := getJSON(t, f.srv.URL+"/api/report?since=24h", &rep); code != 200 {
		t.Fatal(code)
	}
	doms := map[string]ReportDomain{}
	for _, d := range rep.Domains {
		doms[d.Domain] = d
	}
	bank := doms["bank.example"]
	if bank.Inbound == nil || bank.Inbound.WithoutTLS != 1 || bank.Inbound.WithTLS != 2 {
		t.Errorf("bank inbound %+v", bank.Inbound)
	}
	if len(bank.Outbound) != 2 || bank.Outbound[0].Key != "bank.example" || bank.Outbound[1].Key != ".bank.example" {
		t.Errorf("bank outbound %+v", bank.Outbound)
	}
	if bank.Counts["inbound_blocked"] != 1 || len(bank.Events) != 1 {
		t.Errorf("bank events %v %v", bank.Counts, bank.Events)
	}
	partner := doms["partner.example"]
	if len(partner.Outbound) != 2 || partner.Outbound[0].Section != "outbound" || partner.Outbound[1].Section != "recipients" ||
		partner.Counts["outbound_probe_failed"] != 1 || partner.Outbound[0].CheckOK == nil || *partner.Outbound[0].CheckOK {
		t.Errorf("partner: %+v", partner)
	}
	if len(doms["smtp.partner.example"].Outbound) != 1 || len(doms["ourcorp.example"].Outbound) != 1 {
		t.Errorf("bracketed / sender entries not grouped: %+v", rep.Domains)
	}
	if rep.EventTotals[events.ReloadFailed] != 0 || rep.EventTotals[events.OutboundProbeFailed] != 1 {
		t.Errorf("event totals %v (the reload failure is older than 24h)", rep.EventTotals)
	}
	if !rep.TableLoaded || !rep.Since.Equal(now.Add(-24*time.Hour)) {
		t.Errorf("report header %+v", rep)
	}
}

func TestReportDomainOf(t *testing.T) {
	for in, want := range map[string]string{
		"bank.example": "bank.example", ".bank.example": "bank.example", "[smtp.partner.example]:587": "smtp.partner.example",
		"[mx.example]": "mx.example", "mx3.example.com:2526": "mx3.example.com", "cfo@Partner.Example": "partner.example",
		"[ipv6:2001:db8::1]": "ipv6:2001:db8::1", "<>": "<>",
	} {
		if got := ReportDomainOf(in); got != want {
			t.Errorf("ReportDomainOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStatusPage(t *testing.T) {
	f := newFixture(t, true)
	f.traffic(t)
	f.ring.Publish(events.Event{Time: now, Kind: events.InboundBlocked, Domain: `<script>alert(1)</script>.example`, Reason: "x"})
	code, hdr, body := get(t, f.srv.URL+"/")
	if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %s", code, hdr.Get("Content-Type"))
	}
	if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Error("no CSP")
	}
	for _, want := range []string{
		"tlspolicyd <span class=\"muted\">on mx1.ourcorp.example",
		"<code>partner.example</code>", "encrypt fails", "secure ok", "no STARTTLS in EHLO reply",
		"subdomains: not probed", "not probed yet", "review by 2027-06-30",
		"bank-partners", "tls1.2", "header X-TLS-Policy",
		"<code>bank.example</code>", "TLSv1.3 2", // inbound activity
		"outbound_probe_failed", "policy encrypt cannot be met",
		"&lt;script&gt;alert(1)&lt;/script&gt;.example",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("unescaped script tag")
	}
	if code, _, _ := get(t, f.srv.URL+"/nope"); code != 404 {
		t.Errorf("/nope = %d", code)
	}
	resp, err := http.Post(f.srv.URL+"/api/table", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/table = %d", resp.StatusCode)
	}
}

// scrape returns the exposition text of m.
func scrape(m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestMetricsServerReplies wires the metrics to real servers as serve does
// (Observe) and checks that what the servers answer themselves is counted:
// a lookup that overruns RequestTimeout, answered "TEMP timeout" by the
// watchdog, and a panic, answered TEMP; a policy request that overruns it,
// answered with a deferral, as decision "error".
func TestMetricsServerReplies(t *testing.T) {
	const timeout = 100 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	m := NewMetrics()
	ctx := context.Background()

	sm := &socketmap.Server{Handler: socketmap.HandlerFunc(func(_ context.Context, _, key string) (socketmap.Reply, error) {
		switch key {
		case "hang.example":
			<-release
		case "boom.example":
			panic("handler bug")
		}
		return socketmap.Reply{Status: socketmap.StatusOK, Data: "encrypt"}, nil
	}), Observe: m.SocketmapReply, RequestTimeout: timeout, Logger: quiet()}
	smAddr := serveLoopback(t, sm.Serve, sm.Shutdown)
	for _, tc := range []struct{ key, want string }{{"bank.example", "OK"}, {"boom.example", "TEMP"}, {"hang.example", "TEMP"}} {
		c, err := socketmap.Dial(ctx, smAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Lookup(ctx, "tls_policy", tc.key)
		c.Close()
		if err != nil || r.Status.String() != tc.want {
			t.Fatalf("%s: %v %v, want %s", tc.key, r, err, tc.want)
		}
	}

	pd := &policyd.Server{Handler: policyd.HandlerFunc(func(context.Context, *policyd.Request) (policyd.Action, error) {
		<-release
		return "DUNNO", nil
	}), Observe: m.PolicydReply, RequestTimeout: timeout, Logger: quiet()}
	pdAddr := serveLoopback(t, pd.Serve, pd.Shutdown)
	nc, err := net.DialTimeout("tcp", pdAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, "request=smtpd_access_policy\nencryption_protocol=TLSv1.3\n\n"); err != nil {
		t.Fatal(err)
	}
	if reply, err := io.ReadAll(nc); err != nil || string(reply) != "action="+policyd.DefaultDeferText+"\n\n" {
		t.Fatalf("policy reply %q, %v; want the deferral", reply, err)
	}

	body := scrape(m)
	for _, want := range []string{
		`tlspolicyd_socketmap_lookups_total{map="tls_policy",result="OK"} 1`,
		`tlspolicyd_socketmap_lookups_total{map="tls_policy",result="TEMP"} 2`,
		`tlspolicyd_socketmap_lookup_duration_seconds_count 3`,
		`tlspolicyd_socketmap_lookup_duration_seconds_bucket{le="0.05"} 2`, // the timeout took 0.1 s
		`tlspolicyd_policy_requests_total{decision="error",tls="TLSv1.3"} 1`,
		`tlspolicyd_policy_request_duration_seconds_count 1`,
		`tlspolicyd_policy_request_duration_seconds_bucket{le="0.05"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// serveLoopback runs serve on a loopback listener until the test ends.
func serveLoopback(t *testing.T, serve func(net.Listener) error, shutdown func(context.Context) error) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = shutdown(ctx)
	})
	return l.Addr().String()
}

// The status page's verdict is the monitor's (engine.Judge): a probe whose
// level passes still fails an entry whose attributes it does not meet, and
// dane, which the prober cannot judge, gets no verdict.
func TestEntryViewsJudgeAttributes(t *testing.T) {
	tb, err := store.ParseFile("t.yaml", strings.NewReader(`outbound:
  old.example: encrypt protocols=>=TLSv1.3
  new.example: encrypt protocols=>=TLSv1.2
  dane.example: dane
  own.example: verify match=nexthop
  gone.example: encrypt
`))
	if err != nil {
		t.Fatal(err)
	}
	at := func(target string) *probe.Result {
		return &probe.Result{Target: target, NextHop: target, Status: probe.StatusOK,
			Levels: map[string]probe.LevelVerdict{"may": {OK: true}, "encrypt": {OK: true}, "verify": {}, "secure": {}},
			MX: []probe.MXResult{{Host: "mx." + target, Addrs: []probe.AddrResult{{Addr: "192.0.2.1", Reached: true, STARTTLS: true,
				TLS: &probe.TLSInfo{Version: "TLSv1.2"}}}}}}
	}
	// verify with its own match=: the probe's verify verdict (the default
	// match list, hostname) fails, the policy's (nexthop) is met.
	own := at("own.example")
	own.MX[0].Addrs[0].TLS.Trusted = true
	own.MX[0].Addrs[0].TLS.Chain = []probe.CertInfo{{DNSNames: []string{"own.example"}, PubkeySHA256: "AB"}}
	// Unreachable: the probe says nothing of its TLS, so no verdict.
	gone := &probe.Result{Target: "gone.example", NextHop: "gone.example", Status: probe.StatusUnreachable,
		Levels: map[string]probe.LevelVerdict{"may": {}, "encrypt": {}, "verify": {}, "secure": {}}}
	probes := map[string]*probe.Result{"old.example": at("old.example"), "new.example": at("new.example"), "dane.example": at("dane.example"),
		"own.example": own, "gone.example": gone}
	for _, v := range entryViews(tb.Outbound, probes, now) {
		want := map[string]*bool{"old.example": ptr(false), "new.example": ptr(true), "dane.example": nil,
			"own.example": ptr(true), "gone.example": nil}[v.Key]
		if fmt.Sprint(deref(v.CheckOK)) != fmt.Sprint(deref(want)) || (v.CheckOK == nil) != (want == nil) {
			t.Errorf("%s: check %q ok %v, want %v", v.Key, v.Check, deref(v.CheckOK), deref(want))
		}
	}
}

// A report's rows are bounded: event domains beyond maxReportDomains are
// counted under "(other)" (sender domains come from the internet), and
// every event is still counted.
func TestReportDomainsBounded(t *testing.T) {
	ring := events.NewRing(maxReportDomains + 600)
	eng := engine.New(nil, nil, ring, quiet())
	n := maxReportDomains + 500
	for i := range n {
		ring.Publish(events.Event{Time: now.Add(-time.Minute), Kind: events.InboundBlocked, Domain: fmt.Sprintf("d%d.example", i)})
	}
	s := &server{Options: Options{Engine: eng, Now: func() time.Time { return now }}, gate: newScanGate()}
	rep := s.report(now.Add(-time.Hour))
	if len(rep.Domains) != maxReportDomains+1 {
		t.Errorf("%d rows, want %d and (other)", len(rep.Domains), maxReportDomains)
	}
	total, other := 0, 0
	for _, d := range rep.Domains {
		total += d.Counts[string(events.InboundBlocked)]
		if d.Domain == otherReportDomain {
			other = d.Counts[string(events.InboundBlocked)]
		}
	}
	if total != n || other != 500 || rep.EventTotals[events.InboundBlocked] != n {
		t.Errorf("counted %d events (%d under (other)), totals %v; want %d (500)", total, other, rep.EventTotals, n)
	}
}
