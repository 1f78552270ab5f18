package web

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// The cache metrics count records and evictions per kind, and the
// scheduler's queue.
func TestCacheMetrics(t *testing.T) {
	c, err := srccache.New(srccache.Options{Max: map[srccache.Kind]int{srccache.KindProbe: 1}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, k := range []string{"a.test", "b.test"} {
		_ = c.Put(&srccache.Record{Kind: srccache.KindProbe, Domain: k, Expires: now.Add(time.Duration(i+1) * time.Hour)})
	}
	_ = c.Put(&srccache.Record{Kind: srccache.KindDANE, Domain: "d.test", Expires: now.Add(time.Hour)})
	s := srccache.NewScheduler(c, srccache.SchedulerOptions{})
	s.Handle(srccache.KindWatch, srccache.KindOptions{MaxQueue: 1}, func(context.Context, string, *srccache.Record) {})
	s.Queue(srccache.KindWatch, "w1")
	s.Queue(srccache.KindWatch, "w2") // dropped: the queue holds one
	m := NewMetrics()
	m.Cache(c, s)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`tlspolicyd_cache_records{kind="probe"} 1`,
		`tlspolicyd_cache_records{kind="dane"} 1`,
		`tlspolicyd_cache_records{kind="learned"} 0`,
		`tlspolicyd_cache_evictions_total{kind="probe"} 1`,
		`tlspolicyd_cache_evictions_total{kind="dane"} 0`,
		`tlspolicyd_cache_queued{kind="watch"} 1`,
		`tlspolicyd_cache_queue_dropped_total{kind="watch"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(string(body), `tlspolicyd_cache_queued{kind="probe"}`) {
		t.Error("queue metrics for a kind without a handler")
	}
}
