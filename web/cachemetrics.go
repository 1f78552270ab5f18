package web

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// cacheKinds are the record kinds the cache metrics report.
var cacheKinds = []srccache.Kind{srccache.KindDANE, srccache.KindMTASTS, srccache.KindProbe, srccache.KindLearned, srccache.KindWatch}

type cacheCollector struct {
	c                *srccache.Cache
	s                *srccache.Scheduler
	records, evicted *prometheus.Desc
	queued, dropped  *prometheus.Desc
}

// Cache registers the metrics of the daemon's one cache and its
// scheduler (s may be nil): records and evictions per kind, keys waiting
// for a refresh and keys dropped on a full queue.
func (m *Metrics) Cache(c *srccache.Cache, s *srccache.Scheduler) {
	m.reg.MustRegister(&cacheCollector{c: c, s: s,
		records: prometheus.NewDesc("tlspolicyd_cache_records", "Records in the cache, by kind: dane, mta-sts, probe (probe results), learned (learned policies), watch (the monitor's schedule).", []string{"kind"}, nil),
		evicted: prometheus.NewDesc("tlspolicyd_cache_evictions_total", "Records evicted because their kind reached its bound (sources.max_records, probe.max_entries), by kind.", []string{"kind"}, nil),
		queued:  prometheus.NewDesc("tlspolicyd_cache_queued", "Keys waiting for the scheduler (a first probe, a monitor check asked for), by kind.", []string{"kind"}, nil),
		dropped: prometheus.NewDesc("tlspolicyd_cache_queue_dropped_total", "Keys the scheduler's full queue dropped (retried at their next lookup), by kind.", []string{"kind"}, nil),
	})
}

// Describe implements prometheus.Collector.
func (cc *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cc.records, cc.evicted, cc.queued, cc.dropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (cc *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range cacheKinds {
		ch <- prometheus.MustNewConstMetric(cc.records, prometheus.GaugeValue, float64(cc.c.Count(k)), string(k))
		ch <- prometheus.MustNewConstMetric(cc.evicted, prometheus.CounterValue, float64(cc.c.EvictedKind(k)), string(k))
		if cc.s != nil && cc.s.Handles(k) {
			ch <- prometheus.MustNewConstMetric(cc.queued, prometheus.GaugeValue, float64(cc.s.Queued(k)), string(k))
			ch <- prometheus.MustNewConstMetric(cc.dropped, prometheus.CounterValue, float64(cc.s.Dropped(k)), string(k))
		}
	}
}
