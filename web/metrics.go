package web

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// other is the label value for anything outside a metric's known set, so
// that a client sending made-up map names cannot create series at will.
const other = "other"

// knownMaps are the maps the daemon answers (docs/policy-table.md, "How a
// lookup is answered"), labelled as themselves.
var knownMaps = []string{
	store.MapPolicy, store.MapPolicyEncrypt, store.MapPolicyVerify, store.MapPolicySecure,
	store.MapTransport, store.MapSenderTransport,
}

// Decision label values of tlspolicyd_policy_requests_total.
var decisions = []string{"dunno", "defer", "reject", "prepend", "error", other}

// TLS label values of tlspolicyd_policy_requests_total: Postfix's
// encryption_protocol, "none" without TLS.
var tlsVersions = []string{"none", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", other}

// probeStatuses are the probe verdicts labelled as themselves.
var probeStatuses = []string{probe.StatusOK, probe.StatusNoSTARTTLS, probe.StatusTLSFailed, probe.StatusUnreachable, probe.StatusTemporary, probe.StatusNoMail, other}

// eventKinds are the event kinds always exported (at 0 before the first).
var eventKinds = []events.Kind{events.InboundBlocked, events.InboundWouldBlock, events.OutboundProbeFailed, events.BackupMXFailed,
	events.LearnedDowngrade, events.LearnedEvicted, events.CertExpiring, events.ReloadFailed, events.CacheCorrupt,
	events.OutboundDeferred, events.OutboundDelivered, events.ProberBlind,
	events.FleetLinkDown, events.FleetLinkUp, events.SourceEvicted}

// latencyBuckets span a map lookup (microseconds) to the request timeout
// (5 s), in seconds.
var latencyBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// Metrics are the daemon's Prometheus metrics, in a registry of their own
// (not the global one). The instrumentation methods are cheap: every
// label combination is resolved once, in NewMetrics, so a request costs a
// map read and an atomic add. See examples/metrics.md for the list.
type Metrics struct {
	reg *prometheus.Registry

	lookups        map[string]*[socketmap.StatusPerm + 1]prometheus.Counter // by map name, then reply status
	lookupDuration prometheus.Observer

	policy         map[string]map[string]prometheus.Counter // decision → tls → counter
	policyDuration prometheus.Observer

	reloads, reloadErrors prometheus.Counter
	lastReload            prometheus.Gauge
	probes                map[string]prometheus.Counter

	attach sync.Once
}

// NewMetrics returns metrics registered in a new registry, together with
// the Go runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{reg: reg}

	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tlspolicyd_socketmap_lookups_total",
		Help: "Socketmap replies by map name and the reply Postfix got (OK, NOTFOUND, TEMP, TIMEOUT, PERM; a handler error, panic or timeout is answered TEMP, a bad request PERM). Unknown map names are labelled \"other\".",
	}, []string{"map", "result"})
	m.lookups = map[string]*[socketmap.StatusPerm + 1]prometheus.Counter{}
	for _, name := range append(knownMaps, other) {
		var byStatus [socketmap.StatusPerm + 1]prometheus.Counter
		for st := socketmap.StatusOK; st <= socketmap.StatusPerm; st++ {
			byStatus[st] = lookups.WithLabelValues(name, st.String())
		}
		m.lookups[name] = &byStatus
	}
	lookupDuration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tlspolicyd_socketmap_lookup_duration_seconds",
		Help:    "Time from a socketmap request's arrival to its reply (not the network), for every reply counted in tlspolicyd_socketmap_lookups_total.",
		Buckets: latencyBuckets,
	})
	m.lookupDuration = lookupDuration

	policy := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tlspolicyd_policy_requests_total",
		Help: "Policy delegation requests (inbound) by decision (dunno, defer, reject, prepend, error = handler error, panic, invalid action or timeout, answered with a deferral) and the TLS version the client used (none without TLS).",
	}, []string{"decision", "tls"})
	m.policy = map[string]map[string]prometheus.Counter{}
	for _, d := range decisions {
		m.policy[d] = map[string]prometheus.Counter{}
		for _, v := range tlsVersions {
			m.policy[d][v] = policy.WithLabelValues(d, v)
		}
	}
	policyDuration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tlspolicyd_policy_request_duration_seconds",
		Help:    "Time from a policy delegation request's arrival to its reply (not the network).",
		Buckets: latencyBuckets,
	})
	m.policyDuration = policyDuration

	m.reloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tlspolicyd_table_reloads_total",
		Help: "Policy table load attempts (the first load, file changes, SIGHUP), successful or not.",
	})
	m.reloadErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tlspolicyd_table_reload_errors_total",
		Help: "Policy table loads rejected because of errors; the previous table kept serving.",
	})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tlspolicyd_table_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful policy table load.",
	})
	probes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tlspolicyd_probe_verdicts_total",
		Help: "STARTTLS probe results by verdict (ok, no-starttls, tls-failed, unreachable, temporary, no-mail).",
	}, []string{"status"})
	m.probes = map[string]prometheus.Counter{}
	for _, s := range probeStatuses {
		m.probes[s] = probes.WithLabelValues(s)
	}
	reg.MustRegister(lookups, lookupDuration, policy, policyDuration, m.reloads, m.reloadErrors, m.lastReload, probes)
	return m
}

// CounterFunc registers a counter whose value f returns when scraped: a
// count kept elsewhere (the event log's drops, the alerter's deliveries).
func (m *Metrics) CounterFunc(name, help string, f func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
		func() float64 { return float64(f()) }))
}

// GaugeFunc registers a gauge whose value f returns when scraped.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Registry returns the registry the metrics live in, to register more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SocketmapReply counts one socketmap reply by map and status, and its
// duration. It has the signature of socketmap.Server.Observe, which calls
// it for every reply the server sends, its own included (TEMP for a
// timeout or a panic, PERM for a bad request): the count is what Postfix
// got. It takes no clock reading and allocates nothing.
func (m *Metrics) SocketmapReply(mapName string, st socketmap.Status, d time.Duration) {
	m.lookupDuration.Observe(d.Seconds())
	if st < socketmap.StatusOK || st > socketmap.StatusPerm {
		st = socketmap.StatusTemp // what the server sends
	}
	byStatus := m.lookups[mapName]
	if byStatus == nil {
		byStatus = m.lookups[other]
	}
	byStatus[st].Inc()
}

// PolicydReply counts one policy reply by decision and client TLS
// version, and its duration. It has the signature of
// policyd.Server.Observe, which calls it for every reply the server sends:
// failed (DeferText sent for a Handler error, panic, invalid action or
// timeout) is the decision "error".
func (m *Metrics) PolicydReply(req *policyd.Request, a policyd.Action, failed bool, d time.Duration) {
	m.policyDuration.Observe(d.Seconds())
	dec := "error"
	if !failed {
		dec = decision(a)
	}
	v := req.Get("encryption_protocol")
	if v == "" {
		v = "none"
	}
	c := m.policy[dec][v]
	if c == nil {
		c = m.policy[dec][other]
	}
	c.Inc()
}

// decision classifies a policy action the Handler gave for the decision
// label. It runs for
// every policy request, so it compares prefixes in place (hasPrefixFold)
// rather than upper-casing a 200-byte reply up to three times.
func decision(a policyd.Action) string {
	s := string(a)
	switch {
	case strings.EqualFold(s, "DUNNO"):
		return "dunno"
	case strings.HasPrefix(s, "4"), hasPrefixFold(s, "DEFER"):
		return "defer"
	case strings.HasPrefix(s, "5"), hasPrefixFold(s, "REJECT"):
		return "reject"
	case hasPrefixFold(s, "PREPEND"):
		return "prepend"
	}
	return other
}

// hasPrefixFold reports whether s begins with prefix, ignoring case as
// strings.EqualFold does.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Reload counts a table load attempt; err is its result. It has the
// signature engine.Reloader.OnReload wants.
func (m *Metrics) Reload(err error) {
	m.reloads.Inc()
	if err != nil {
		m.reloadErrors.Inc()
		return
	}
	m.lastReload.SetToCurrentTime()
}

// ProbeVerdict counts one probe result by its Status.
func (m *Metrics) ProbeVerdict(status string) {
	c := m.probes[status]
	if c == nil {
		c = m.probes[other]
	}
	c.Inc()
}

// attachEngine registers the metrics read from the engine when scraped:
// whether a table is loaded, its size, and events by kind. Only the first
// engine counts (New may be called more than once with the same Metrics).
func (m *Metrics) attachEngine(eng *engine.Engine) {
	m.attach.Do(func() { m.reg.MustRegister(newEngineCollector(eng)) })
}

// engineCollector reads gauges and counters from the engine at scrape time.
type engineCollector struct {
	eng                   *engine.Engine
	loaded, entries, evts *prometheus.Desc
}

func newEngineCollector(eng *engine.Engine) *engineCollector {
	return &engineCollector{
		eng:     eng,
		loaded:  prometheus.NewDesc("tlspolicyd_table_loaded", "1 while a valid policy table is loaded (else every request fails closed).", nil, nil),
		entries: prometheus.NewDesc("tlspolicyd_table_entries", "Entries of the policy table in use, by section.", []string{"section"}, nil),
		evts:    prometheus.NewDesc("tlspolicyd_events_total", "Events (mail blocked or that would be blocked, failed probes of enforced or testing destinations, expiring certificates, downgrade attempts, rejected reloads) by kind, since start.", []string{"kind"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.loaded
	ch <- c.entries
	ch <- c.evts
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	if s := c.eng.Store(); s == nil {
		ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, 0)
	} else {
		ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, 1)
		t := s.Table()
		for _, sec := range []struct {
			name string
			n    int
		}{{"outbound", len(t.Outbound)}, {"recipients", len(t.Recipients)}, {"senders", len(t.Senders)}, {"inbound", len(t.Inbound)}} {
			ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(sec.n), sec.name)
		}
	}
	totals := c.eng.Events().Totals()
	var rest uint64
	for k, n := range totals {
		if !slices.Contains(eventKinds, k) {
			rest += n
		}
	}
	for _, k := range eventKinds {
		ch <- prometheus.MustNewConstMetric(c.evts, prometheus.CounterValue, float64(totals[k]), string(k))
	}
	ch <- prometheus.MustNewConstMetric(c.evts, prometheus.CounterValue, float64(rest), other)
}
