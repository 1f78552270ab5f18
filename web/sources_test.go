package web

import (
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// fakeSources is the sources' view for the status page: a cache.
type fakeSources struct{ c *srccache.Cache }

func (f fakeSources) Cache() *srccache.Cache { return f.c }
func (f fakeSources) Stats() sources.Stats   { return sources.Stats{CacheSize: f.c.Len()} }

// sourcesAt is a cache holding MTA-STS policies with what the monitor's
// last probe of their MX hosts found (watch records), a DANE answer, and
// a table entry's watch record (not a source: never a row).
func sourcesAt(t *testing.T, now time.Time) fakeSources {
	t.Helper()
	c, err := srccache.New(srccache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sts := func(domain, id string, mode mtasts.Mode, answer string) *srccache.Record {
		return &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Answer: answer, Fetched: now.Add(-time.Hour), Checked: now.Add(-time.Hour),
			Expires: now.Add(23 * time.Hour), Refresh: now.Add(time.Hour),
			MTASTS: &srccache.MTASTS{ID: id, Policy: &mtasts.Policy{Mode: mode, MX: []string{"mx." + domain}, MaxAge: 86400}}}
	}
	watch := func(domain string, w srccache.Watch, ago time.Duration) *srccache.Record {
		w.Probed = now.Add(-ago)
		return &srccache.Record{Kind: srccache.KindWatch, Domain: srccache.MTASTSWatchKey(domain), Checked: w.Probed, Fetched: w.Probed,
			Refresh: now.Add(time.Hour), Expires: now.Add(7 * 24 * time.Hour), Watch: &w}
	}
	idle := sts("idle.test", "i1", mtasts.ModeEnforce, "secure match=mx.idle.test servername=hostname")
	idle.Checked = now.Add(-8 * 24 * time.Hour)
	for _, r := range []*srccache.Record{
		idle,
		sts("plain.test", "p1", mtasts.ModeTesting, ""),
		watch("plain.test", srccache.Watch{Testing: true, Status: "no-starttls", Policy: "secure match=mx.plain.test servername=hostname",
			Defer: "mx.plain.test[192.0.2.7]:25: no STARTTLS offered"}, 20*time.Minute),
		sts("good.test", "g1", mtasts.ModeTesting, ""),
		watch("good.test", srccache.Watch{Testing: true, Status: "ok"}, 5*time.Minute),
		sts("enforce.test", "e1", mtasts.ModeEnforce, "secure match=mx.enforce.test servername=hostname"),
		watch("enforce.test", srccache.Watch{Status: "ok", Defer: "mx.enforce.test[192.0.2.8]:25: certificate has expired"}, 10*time.Minute),
		sts("new.test", "n1", mtasts.ModeTesting, ""),
		sts("bank.example", "b1", mtasts.ModeEnforce, "secure match=mx.bank.example servername=hostname"), // the table decides
		sts("both.test", "d1", mtasts.ModeEnforce, "secure match=mx.both.test servername=hostname"),
		{Kind: srccache.KindDANE, Domain: "both.test", Answer: "dane", Fetched: now, Checked: now, Expires: now.Add(time.Hour), Refresh: now.Add(time.Hour)},
		{Kind: srccache.KindDANE, Domain: "dane.test", Answer: "dane-only", Fetched: now, Checked: now, Expires: now.Add(time.Hour), Refresh: now.Add(time.Hour)},
		{Kind: srccache.KindWatch, Domain: "outbound:table.example", Checked: now, Error: "probe table.example: rate limited",
			Refresh: now.Add(time.Minute), Expires: now.Add(24 * time.Hour), Watch: &srccache.Watch{}},
	} {
		if err := c.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	return fakeSources{c}
}

func newSourcesServer(t *testing.T, now time.Time) *httptest.Server {
	t.Helper()
	f := newFixtureAt(t, true, now)
	srv := httptest.NewServer(New(Options{Engine: f.eng, Probes: probesAt(now), Metrics: NewMetrics(), Logger: quiet(),
		Sources: sourcesAt(t, now), Started: now.Add(-48 * time.Hour), Now: func() time.Time { return now }}))
	t.Cleanup(srv.Close)
	return srv
}

// /api/table: each MTA-STS domain says what the monitor's last probe
// found under its policy ("would defer: …" for a testing policy whose MX
// would fail it); the monitor's own records of other keys are no rows.
func TestAPITableSourcesMonitor(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	srv := newSourcesServer(t, now)
	_, _, body := get(t, srv.URL+"/api/table")
	var tv struct{ Sources []SourceView }
	if err := json.Unmarshal([]byte(body), &tv); err != nil {
		t.Fatal(err)
	}
	got := map[string]SourceView{}
	for _, v := range tv.Sources {
		got[v.Domain] = v
	}
	for domain, want := range map[string]string{
		"plain.test":   "would defer: mx.plain.test[192.0.2.7]:25: no STARTTLS offered",
		"good.test":    "would deliver",
		"enforce.test": "defers: mx.enforce.test[192.0.2.8]:25: certificate has expired",
		"new.test":     "",
		"dane.test":    "",
	} {
		v, ok := got[domain]
		if !ok || v.Monitor != want {
			t.Errorf("%s: monitor %q, want %q (%+v)", domain, v.Monitor, want, v)
		}
	}
	// Why the monitor leaves a domain alone.
	for domain, want := range map[string]string{
		"bank.example": "the table decides this domain",
		"both.test":    "DANE decides this domain",
		"idle.test":    "not looked up for 7 days",
		"new.test":     "",
	} {
		if v := got[domain]; v.Unmonitored != want || v.Monitor != "" {
			t.Errorf("%s: unmonitored %q, want %q (%+v)", domain, v.Unmonitored, want, v)
		}
	}
	if v := got["plain.test"]; !v.Monitored.Equal(now.Add(-20 * time.Minute)) {
		t.Errorf("plain.test monitored at %v", v.Monitored)
	}
	if len(tv.Sources) != 9 {
		t.Errorf("%d rows, want the 9 sources only: %+v", len(tv.Sources), tv.Sources)
	}
}

// The status page in Chromium: the DANE and MTA-STS table's Monitor column
// says, per row, what the last probe found.
func TestStatusPageSourcesInChromium(t *testing.T) {
	bin := chromium(t)
	srv := newSourcesServer(t, time.Now())
	dom := string(runChromium(t, bin, srv.URL+"/", "--dump-dom"))
	_, section, ok := strings.Cut(dom, "DANE and MTA-STS")
	if !ok {
		t.Fatalf("no DANE and MTA-STS section:\n%.3000s", dom)
	}
	section, _, _ = strings.Cut(section, "</table>")
	if !strings.Contains(section, "<th>Monitor</th>") {
		t.Errorf("no Monitor column:\n%s", section)
	}
	rows := map[string]string{}
	for _, tr := range regexp.MustCompile(`(?s)<tr>(.*?)</tr>`).FindAllStringSubmatch(section, -1) {
		if d := regexp.MustCompile(`<code>([^<]+)</code>`).FindStringSubmatch(tr[1]); d != nil {
			rows[d[1]] = tr[1]
		}
	}
	for domain, want := range map[string]string{
		"plain.test":   "would defer: mx.plain.test[192.0.2.7]:25: no STARTTLS offered",
		"good.test":    "would deliver",
		"enforce.test": "defers: mx.enforce.test[192.0.2.8]:25: certificate has expired",
		"new.test":     "not probed yet",
		"both.test":    "not probed: DANE decides this domain",
	} {
		if !strings.Contains(rows[domain], want) {
			t.Errorf("%s row lacks %q:\n%s", domain, want, rows[domain])
		}
	}
	if strings.Contains(dom, "table.example") || len(rows) != 8 {
		t.Errorf("rows %v: want the 8 sources, no watch record of a table entry", len(rows))
	}
	for d, tr := range rows {
		if n := strings.Count(tr, "<td"); n != 7 {
			t.Errorf("%s: %d cells under 7 headers", d, n)
		}
	}
}
