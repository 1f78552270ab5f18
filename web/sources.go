package web

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// SourcesInfo is what the status page, /api/table and /metrics read of
// the DANE and MTA-STS sources (a *sources.Manager).
type SourcesInfo interface {
	Cache() *srccache.Cache
	Stats() sources.Stats
}

// SourceView is a domain decided (or attempted) by DANE or MTA-STS.
type SourceView struct {
	Domain  string    `json:"domain"`
	Source  string    `json:"source"`           // dane or mta-sts
	Policy  string    `json:"policy,omitempty"` // what Postfix gets; "" for none
	Mode    string    `json:"mode,omitempty"`   // MTA-STS mode
	ID      string    `json:"id,omitempty"`     // MTA-STS TXT id
	MX      []string  `json:"mx,omitempty"`     // MTA-STS mx patterns
	Temp    bool      `json:"temp,omitempty"`   // answered TEMP: DANE records exist but cannot be read
	Fetched time.Time `json:"fetched,omitzero"`
	Checked time.Time `json:"checked"`
	Expires time.Time `json:"expires"`
	Error   string    `json:"error,omitempty"` // the last fetch's error
	Why     string    `json:"why,omitempty"`
	// Monitor is what the monitor's last probe of an MTA-STS enforce or
	// testing domain's MX hosts found, judged under the policy: "would
	// defer: …" or "would deliver" (testing), "defers: …" or "delivers"
	// (enforce), "not judged: …" (the probe said nothing of TLS); ""
	// before the first probe. Monitored is when that probe was made.
	Monitor   string    `json:"monitor,omitempty"`
	Monitored time.Time `json:"monitored,omitzero"`
	// Unmonitored says why the monitor does not probe an enforce or
	// testing domain: the table or DANE decides it, or nobody looked it
	// up for 7 days.
	Unmonitored string `json:"unmonitored,omitempty"`
}

// sourcesView lists the source cache's records that decide something, or
// whose last fetch failed: policies, testing MTA-STS policies, TEMP
// answers, errors. Domains with nothing published are left out.
func (s *server) sourcesView() []SourceView {
	if s.Sources == nil {
		return nil
	}
	now := s.Now()
	out := []SourceView{}
	c := s.Sources.Cache()
	for _, r := range append(c.ByKind(srccache.KindDANE), c.ByKind(srccache.KindMTASTS)...) {
		if !r.Valid(now) {
			continue
		}
		v := SourceView{Domain: r.Domain, Source: string(r.Kind), Policy: r.Answer, Temp: r.Temp,
			Fetched: r.Fetched, Checked: r.Checked, Expires: r.Expires, Error: r.Error, Why: r.Why}
		if m := r.MTASTS; m != nil {
			v.ID = m.ID
			if m.Policy != nil {
				v.Mode, v.MX = string(m.Policy.Mode), m.Policy.MX
			}
			if w := c.Get(srccache.KindWatch, srccache.MTASTSWatchKey(r.Domain)); w != nil && w.Watch != nil && !w.Watch.Probed.IsZero() {
				v.Monitor, v.Monitored = watchVerdict(w.Watch), w.Watch.Probed
			} else if v.Mode == string(mtasts.ModeEnforce) || v.Mode == string(mtasts.ModeTesting) {
				v.Unmonitored = engine.NotWatched(s.Engine, c, r, now)
			}
		}
		if v.Policy == "" && !v.Temp && v.Error == "" && v.Mode == "" {
			continue
		}
		out = append(out, v)
	}
	slices.SortStableFunc(out, func(a, b SourceView) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// watchVerdict words what the last watch probe w found.
func watchVerdict(w *srccache.Watch) string {
	switch {
	case w.Defer != "" && w.Testing:
		return "would defer: " + w.Defer
	case w.Defer != "":
		return "defers: " + w.Defer
	case w.Inconclusive != "":
		return "not judged: " + w.Inconclusive
	case w.Testing:
		return "would deliver"
	}
	return "delivers"
}

// sourcesCollector exports the sources' counters at scrape time.
type sourcesCollector struct {
	src                                  SourcesInfo
	answers, errors, size, evicted, late *prometheus.Desc
}

// Sources registers the DANE/MTA-STS metrics of src.
func (m *Metrics) Sources(src SourcesInfo) {
	m.reg.MustRegister(&sourcesCollector{
		src:     src,
		answers: prometheus.NewDesc("tlspolicyd_source_answers_total", "Lookups of domains the table does not decide, by what DANE and MTA-STS answered: dane, mta-sts, mta-sts-testing (a testing policy: not enforced), none, temp (DANE records exist but cannot be read: deferred).", []string{"answer"}, nil),
		errors:  prometheus.NewDesc("tlspolicyd_source_fetch_errors_total", "DANE lookups and MTA-STS TXT lookups or policy fetches that failed, by source.", []string{"source"}, nil),
		size:    prometheus.NewDesc("tlspolicyd_source_cache_records", "Records in the DANE/MTA-STS source cache.", nil, nil),
		evicted: prometheus.NewDesc("tlspolicyd_source_cache_evictions_total", "Records evicted because the source cache was full.", nil, nil),
		late:    prometheus.NewDesc("tlspolicyd_source_first_lookup_timeouts_total", "First lookups answered without the sources because their DNS/HTTPS work took longer than sources.timeout.", nil, nil),
	})
}

// Describe implements prometheus.Collector.
func (c *sourcesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.answers, c.errors, c.size, c.evicted, c.late} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *sourcesCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	for _, a := range []struct {
		label string
		n     uint64
	}{{"dane", st.DANE}, {"mta-sts", st.MTASTS}, {"mta-sts-testing", st.MTASTSTesting}, {"none", st.None}, {"temp", st.Temp}} {
		ch <- prometheus.MustNewConstMetric(c.answers, prometheus.CounterValue, float64(a.n), a.label)
	}
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.DANEFetchErrors), "dane")
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(st.MTASTSFetchErrors), "mta-sts")
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(st.CacheSize))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(c.late, prometheus.CounterValue, float64(st.Timeouts))
}
