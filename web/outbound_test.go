package web

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

// fakeOutbound returns fixed rows and records the since it was asked for.
type fakeOutbound struct {
	rows  []outbound.DomainReport
	since *time.Time
}

func (f fakeOutbound) Report(since time.Time) []outbound.DomainReport {
	*f.since = since
	return f.rows
}

// TestOutboundReport: the outbound TLS rows from Postfix's log appear in
// /api/report beside the inbound counts, and on the status page with the
// stuck domain first.
func TestOutboundReport(t *testing.T) {
	stuckSince := now.Add(-2 * time.Hour)
	var asked time.Time
	ob := fakeOutbound{since: &asked, rows: []outbound.DomainReport{
		{Domain: "bank.example", Counts: outbound.Counts{Messages: 10, Sent: 9, TLS: 9, Verified: 9, Versions: map[string]uint64{"TLSv1.3": 9}}},
		{Domain: "plain.example", Counts: outbound.Counts{Messages: 3, Deferred: 3, Deferrals: map[string]uint64{"starttls_not_offered": 3}},
			Stuck: 2, StuckSince: &stuckSince, StuckReason: "TLS is required, but was not offered by host mx.plain.example[192.0.2.7]"},
	}}
	eng := engine.New(nil, nil, events.NewRing(10), quiet())
	srv := httptest.NewServer(New(Options{Engine: eng, Logger: quiet(), Now: func() time.Time { return now },
		Outbound: ob, Maillog: "/var/log/mail.log"}))
	defer srv.Close()

	var rep Report
	if code := getJSON(t, srv.URL+"/api/report?since=7d", &rep); code != 200 {
		t.Fatal(code)
	}
	if rep.Maillog != "/var/log/mail.log" || !asked.Equal(now.Add(-7*24*time.Hour)) {
		t.Errorf("maillog %q, asked since %v", rep.Maillog, asked)
	}
	doms := map[string]ReportDomain{}
	for _, d := range rep.Domains {
		doms[d.Domain] = d
	}
	if o := doms["bank.example"].OutboundTLS; o == nil || o.Verified != 9 || o.Versions["TLSv1.3"] != 9 {
		t.Errorf("bank.example outbound_tls %+v", o)
	}
	if o := doms["plain.example"].OutboundTLS; o == nil || o.Stuck != 2 || o.Deferrals["starttls_not_offered"] != 3 || !o.StuckSince.Equal(stuckSince) {
		t.Errorf("plain.example outbound_tls %+v", o)
	}

	_, _, body := get(t, srv.URL+"/")
	i, j := strings.Index(body, "<code>plain.example</code>"), strings.Index(body, "<code>bank.example</code>")
	if !strings.Contains(body, "Outbound TLS by destination domain") || i < 0 || j < 0 || i > j ||
		!strings.Contains(body, "2 deferred by TLS policy</span> since "+stuckSince.UTC().Format("2006-01-02 15:04:05")) {
		t.Errorf("status page outbound section missing or misordered:\n%s", body)
	}
}
