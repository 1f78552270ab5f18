package web

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// TestJSONNotHTMLEscaped: the API writes ">" as it is, not \u003e.
func TestJSONNotHTMLEscaped(t *testing.T) {
	f := newFixture(t, true)
	for _, path := range []string{"/api/table", "/api/report"} {
		_, _, body := get(t, f.srv.URL+path)
		if !strings.Contains(body, `protocols=>=TLSv1.2`) || strings.Contains(body, `\u003e`) {
			t.Errorf("%s: policy HTML-escaped or missing:\n%.600s", path, body)
		}
	}
}

const x509Wall = `mx.partner.example[192.0.2.9]: certificate not trusted: x509: certificate signed by unknown authority (possibly because of "crypto/rsa: verification error" while trying to verify candidate authority certificate "tlspolicyd test CA")`

func TestShortReason(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mx.partner.example[192.0.2.9]: no STARTTLS in EHLO reply", "no STARTTLS in EHLO reply"},
		{"verify would fail: " + x509Wall, "certificate not trusted"},
		{"mail to partner.example is deferred: policy verify cannot be met: " + x509Wall + "; mx2.partner.example[192.0.2.10]:2525: no STARTTLS offered", "certificate not trusted"},
		{"no MX address reachable: mx.a.example[192.0.2.1]: dial tcp 192.0.2.1:25: connect: connection refused", "dial tcp 192.0.2.1:25: connect: connection refused"},
		{"MX lookup failed: lookup a.example on 127.0.0.1:53: server misbehaving", "MX lookup failed"},
		{"TLS 1.2 or newer is required; the connection was not encrypted", "TLS 1.2 or newer is required; the connection was not encrypted"},
		{strings.Repeat("a", 200), strings.Repeat("a", 89) + "…"},
	} {
		if got := shortReason(tc.in); got != tc.want {
			t.Errorf("shortReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

type blindProber struct{ since time.Time }

func (b blindProber) Blind() (bool, time.Time, string) {
	return true, b.since, "partner.example: MX lookup failed: lookup partner.example on 127.0.0.53:53: read udp: i/o timeout"
}

// statusServer serves the status page of testdata/table.yaml with probes
// and a prober of the test's choosing.
func statusServer(t *testing.T, probes fakeProbes, prober interface {
	Blind() (bool, time.Time, string)
}, evs ...events.Event) *httptest.Server {
	t.Helper()
	s, err := store.Load("testdata/table.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ring := events.NewRing(100)
	for _, e := range evs {
		ring.Publish(e)
	}
	o := Options{Engine: engine.New(s, nil, ring, quiet()), Probes: probes, Logger: quiet(), Hostname: "mx1.ourcorp.example",
		Started: now.Add(-time.Hour), Now: func() time.Time { return now }}
	if prober != nil {
		o.Prober = prober
	}
	srv := httptest.NewServer(New(o))
	t.Cleanup(srv.Close)
	return srv
}

// TestStatusPageShortReasons: a probe's Go error text is a short reason on
// the page, the whole text on demand (details), also for an event's.
func TestStatusPageShortReasons(t *testing.T) {
	probes := fakeProbes{{Target: "partner.example", Status: probe.StatusNoSTARTTLS, Reason: "verify would fail: " + x509Wall,
		Time: now.Add(-time.Hour), Expires: now.Add(time.Hour), Levels: map[string]probe.LevelVerdict{"encrypt": {Reason: x509Wall}}}}
	srv := statusServer(t, probes, nil, events.Event{Time: now, Kind: events.OutboundProbeFailed, Domain: "partner.example",
		Reason: "mail to partner.example is deferred: policy encrypt cannot be met: " + x509Wall})
	_, _, body := get(t, srv.URL+"/")
	if n := strings.Count(body, `<div class="small reason">certificate not trusted<details><summary>full error</summary>`); n != 1 {
		t.Errorf("the probe's reason is shown short with the full text on demand %d times, want 1", n)
	}
	if !strings.Contains(body, `<td class="small reason">certificate not trusted<details><summary>full text</summary>`) {
		t.Error("the event's reason is not shortened")
	}
	if strings.Contains(body, "prober-blind") {
		t.Error("a blind-prober banner without a blind prober")
	}
}

// TestStatusPageBlindProber: a prober whose every probe fails temporarily
// is a banner on the status page.
func TestStatusPageBlindProber(t *testing.T) {
	srv := statusServer(t, nil, blindProber{since: now.Add(-2 * time.Hour)})
	_, _, body := get(t, srv.URL+"/")
	for _, want := range []string{`id="prober-blind"`, "The prober is blind:</strong> every probe since 2026-05-01 10:00:00 UTC failed temporarily",
		"(latest: partner.example: MX lookup failed)", "probe.resolver"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
