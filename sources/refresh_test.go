package sources

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// runScheduler runs a Scheduler with the Manager's handlers until the
// test ends.
func (e *env) runScheduler(t *testing.T) {
	t.Helper()
	s := srccache.NewScheduler(e.m.Cache(), srccache.SchedulerOptions{})
	e.m.Register(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// idle makes domain's MTA-STS record due now, not looked up since its
// last check, and returns it.
func (e *env) idle(t *testing.T, domain string) *srccache.Record {
	t.Helper()
	r := *e.m.Cache().Get(srccache.KindMTASTS, domain)
	r.Refresh = time.Now().Add(-time.Second)
	r.Checked = time.Now().Add(time.Hour) // not looked up since
	_ = e.m.Cache().Put(&r)
	return &r
}

// due makes domain's MTA-STS record due for refresh now.
func (e *env) due(t *testing.T, domain string) {
	t.Helper()
	r := *e.m.Cache().Get(srccache.KindMTASTS, domain)
	r.Refresh = time.Now().Add(-time.Second)
	r.Checked = time.Now().Add(-2 * time.Minute) // looked up since
	_ = e.m.Cache().Put(&r)
}

// RFC 8461 §5: a refresh refetches when the TXT id changes; a failed
// fetch keeps the cached policy until max_age; once it has expired, a
// failing fetch leaves the domain without policy.
func TestRefresh(t *testing.T) {
	e := newEnv(t, 5*time.Second, "r.test")
	e.sts(t, "r.test", "1")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.r.test"))
	if d := e.resolve(t, "r.test"); d.Policy != "secure match=mx1.r.test servername=hostname" {
		t.Fatalf("first: %+v", d)
	}
	ctx := context.Background()

	// Same id, fresh policy: the TXT record is checked, no fetch.
	e.due(t, "r.test")
	e.m.refreshDue(ctx, e.m.Cache().Get(srccache.KindMTASTS, "r.test"), time.Now())
	if n := e.host.Requests(); n != 1 {
		t.Fatalf("%d fetches after an unchanged id, want 1", n)
	}
	if n := e.dns.Count("_mta-sts.r.test", dns.TypeTXT); n != 2 {
		t.Fatalf("%d TXT queries, want 2", n)
	}

	// New id: refetched, new mx list.
	e.dns.Remove("_mta-sts.r.test", dns.TypeTXT)
	e.dns.Add(t, `_mta-sts.r.test. 300 IN TXT "v=STSv1; id=2"`)
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx2.r.test"))
	e.due(t, "r.test")
	e.m.refreshDue(ctx, e.m.Cache().Get(srccache.KindMTASTS, "r.test"), time.Now())
	if d := e.resolve(t, "r.test"); d.Policy != "secure match=mx2.r.test servername=hostname" {
		t.Fatalf("after id change: %+v", d)
	}

	// Id changes again but the fetch fails: the cached policy stays, with
	// the error recorded.
	e.dns.Remove("_mta-sts.r.test", dns.TypeTXT)
	e.dns.Add(t, `_mta-sts.r.test. 300 IN TXT "v=STSv1; id=3"`)
	e.host.SetHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	e.due(t, "r.test")
	e.m.refreshDue(ctx, e.m.Cache().Get(srccache.KindMTASTS, "r.test"), time.Now())
	d := e.resolve(t, "r.test")
	if d.Policy != "secure match=mx2.r.test servername=hostname" || d.Record.Error == "" {
		t.Fatalf("failed refresh: %+v (error %q)", d, d.Record.Error)
	}
	// The TXT record disappears: the cached policy is still in force (§8.3).
	e.dns.Remove("_mta-sts.r.test", dns.TypeTXT)
	e.due(t, "r.test")
	e.m.refreshDue(ctx, e.m.Cache().Get(srccache.KindMTASTS, "r.test"), time.Now())
	if d := e.resolve(t, "r.test"); d.Source != SourceMTASTS {
		t.Fatalf("TXT removed: %+v", d)
	}

	// Expired, TXT back, fetch failing: no policy.
	e.dns.Add(t, `_mta-sts.r.test. 300 IN TXT "v=STSv1; id=4"`)
	r := *e.m.Cache().Get(srccache.KindMTASTS, "r.test")
	r.Expires = time.Now().Add(-time.Second)
	_ = e.m.Cache().Put(&r)
	if d := e.resolve(t, "r.test"); d.Source != "" {
		t.Fatalf("expired and failing: %+v", d)
	}
}

// A due record nobody looked up is not refreshed: it is kept until it
// expires, then deleted.
func TestRefreshIdle(t *testing.T) {
	e := newEnv(t, 5*time.Second, "idle.test")
	e.sts(t, "idle.test", "1")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.idle.test"))
	e.resolve(t, "idle.test")
	e.m.refreshDue(context.Background(), e.idle(t, "idle.test"), time.Now())
	got := e.m.Cache().Get(srccache.KindMTASTS, "idle.test")
	if e.dns.Count("_mta-sts.idle.test", dns.TypeTXT) != 1 || !got.Refresh.Equal(got.Expires) {
		t.Fatalf("idle record refreshed or not kept to expiry: %+v", got)
	}
	r := *got
	r.Expires = time.Now().Add(-time.Second)
	_ = e.m.Cache().Put(&r)
	e.m.refreshDue(context.Background(), &r, time.Now())
	if e.m.Cache().Get(srccache.KindMTASTS, "idle.test") != nil {
		t.Fatal("expired idle record not deleted")
	}
}

// Lookup times of domains the cache no longer holds are forgotten.
func TestSweepUsed(t *testing.T) {
	e := newEnv(t, 5*time.Second, "u.test")
	e.resolve(t, "gone.test")
	if _, ok := e.m.used.Load("gone.test"); !ok {
		t.Fatal("lookup time not recorded")
	}
	_ = e.m.Cache().Delete(srccache.KindMTASTS, "gone.test")
	e.m.sweepUsed()
	if _, ok := e.m.used.Load("gone.test"); !ok {
		t.Fatal("forgotten while its DANE record is still cached")
	}
	_ = e.m.Cache().Delete(srccache.KindDANE, "gone.test")
	e.m.sweepUsed()
	if _, ok := e.m.used.Load("gone.test"); ok {
		t.Fatal("lookup time of a domain without records kept")
	}
}

// Through the cache's one Scheduler: a due record looked up since its
// last check is refetched, and the refetched policy answers.
func TestRegisterRefreshesThroughScheduler(t *testing.T) {
	e := newEnv(t, 5*time.Second, "s.test")
	e.sts(t, "s.test", "1")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.s.test"))
	if d := e.resolve(t, "s.test"); d.Policy != "secure match=mx1.s.test servername=hostname" {
		t.Fatalf("first: %+v", d)
	}
	e.dns.Remove("_mta-sts.s.test", dns.TypeTXT)
	e.dns.Add(t, `_mta-sts.s.test. 300 IN TXT "v=STSv1; id=2"`)
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx2.s.test"))
	e.runScheduler(t)
	e.due(t, "s.test")
	deadline := time.Now().Add(10 * time.Second)
	for e.m.Cache().Get(srccache.KindMTASTS, "s.test").MTASTS.ID != "2" {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler did not refetch the changed policy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := e.resolve(t, "s.test"); d.Policy != "secure match=mx2.s.test servername=hostname" {
		t.Fatalf("after the scheduled refresh: %+v", d)
	}
}

// Through the Scheduler, which hands the handler the record as it was due
// and holds a leased copy meanwhile: a due record nobody looked up is
// kept to its expiry, not dispatched again after every lease.
func TestRegisterIdleKeptToExpiry(t *testing.T) {
	e := newEnv(t, 5*time.Second, "idle.test")
	e.sts(t, "idle.test", "1")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.idle.test"))
	e.resolve(t, "idle.test")
	e.idle(t, "idle.test")
	e.runScheduler(t)
	deadline := time.Now().Add(10 * time.Second)
	for got := e.m.Cache().Get(srccache.KindMTASTS, "idle.test"); !got.Refresh.Equal(got.Expires); got = e.m.Cache().Get(srccache.KindMTASTS, "idle.test") {
		if time.Now().After(deadline) {
			t.Fatalf("idle record refreshes at %v, want its expiry %v", got.Refresh, got.Expires)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle DANE record that found TLSA records is kept daneMemory past its
// expiry: a first lookup after Postfix's retry interval that times out
// still defers instead of answering without DANE. One that found nothing
// goes at expiry.
func TestIdleKnownDANEKept(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond, "unused.test")
	e.dns.Add(t, "k.test. 300 IN MX 10 mx.k.test.")
	e.dns.Add(t, "mx.k.test. 300 IN A 192.0.2.1")
	e.dns.Add(t, "_25._tcp.mx.k.test. 300 IN TLSA 3 1 1 "+digest)
	e.dns.Sign("k.test")
	e.dns.Add(t, "n.test. 300 IN MX 10 mx.n.test.")
	e.dns.Add(t, "mx.n.test. 300 IN A 192.0.2.2")
	for _, d := range []string{"k.test", "n.test"} {
		e.resolve(t, d)
		r := *e.m.Cache().Get(srccache.KindDANE, d)
		r.Expires = time.Now().Add(-time.Second)
		r.Checked = time.Now().Add(time.Hour) // not looked up since
		_ = e.m.Cache().Put(&r)
		e.m.refreshDue(context.Background(), e.m.Cache().Get(srccache.KindDANE, d), time.Now())
	}
	if e.m.Cache().Get(srccache.KindDANE, "n.test") != nil {
		t.Fatal("an idle DANE record that found no TLSA records was kept past its expiry")
	}
	k := e.m.Cache().Get(srccache.KindDANE, "k.test")
	if k == nil || k.Refresh.Before(k.Expires.Add(daneMemory-time.Minute)) {
		t.Fatalf("the idle DANE record with TLSA records was not kept: %+v", k)
	}
	e.dns.Delay(time.Second)
	if _, err := e.m.Resolve(context.Background(), "k.test"); !errors.Is(err, ErrTemp) {
		t.Fatalf("first lookup past the bound after the expiry: err %v, want ErrTemp", err)
	}
	for deadline := time.Now().Add(10 * time.Second); e.m.Cache().Get(srccache.KindDANE, "k.test") == k; { // the fetch goes on after the bound
		if time.Now().After(deadline) {
			t.Fatal("the background fetch did not finish")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cur := *e.m.Cache().Get(srccache.KindDANE, "k.test")
	cur.Expires = time.Now().Add(-daneMemory - time.Second)
	cur.Checked = time.Now().Add(time.Hour)
	_ = e.m.Cache().Put(&cur)
	e.m.refreshDue(context.Background(), e.m.Cache().Get(srccache.KindDANE, "k.test"), time.Now())
	if e.m.Cache().Get(srccache.KindDANE, "k.test") != nil {
		t.Fatal("kept past daneMemory")
	}
}

// A record parked until its expiry while nobody looked the domain up is
// checked again once a lookup finds it unchecked for over an hour: a
// policy changed meanwhile is fetched, not served stale until max_age.
func TestParkedRecordRecheckedOnLookup(t *testing.T) {
	e := newEnv(t, 5*time.Second, "p.test")
	e.sts(t, "p.test", "1")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400*365, "mx1.p.test"))
	if d := e.resolve(t, "p.test"); d.Policy != "secure match=mx1.p.test servername=hostname" {
		t.Fatalf("first: %+v", d)
	}
	// Parked as the scheduler parks an idle record: checked two hours
	// ago, next refresh at its expiry.
	r := *e.m.Cache().Get(srccache.KindMTASTS, "p.test")
	r.Checked = time.Now().Add(-2 * time.Hour)
	r.Fetched = r.Checked
	r.Refresh = r.Expires
	_ = e.m.Cache().Put(&r)
	e.dns.Remove("_mta-sts.p.test", dns.TypeTXT)
	e.dns.Add(t, `_mta-sts.p.test. 300 IN TXT "v=STSv1; id=2"`)
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx2.p.test"))
	e.runScheduler(t)
	e.resolve(t, "p.test") // answers the parked policy, and queues its recheck
	deadline := time.Now().Add(10 * time.Second)
	for e.m.Cache().Get(srccache.KindMTASTS, "p.test").MTASTS.ID != "2" {
		if time.Now().After(deadline) {
			t.Fatal("the parked record was not checked again after a lookup")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := e.resolve(t, "p.test"); d.Policy != "secure match=mx2.p.test servername=hostname" {
		t.Fatalf("after the recheck: %+v", d)
	}
}
