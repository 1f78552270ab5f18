package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

func stsRecord(domain, id string, mode mtasts.Mode, mx string, now time.Time) *srccache.Record {
	return &srccache.Record{Kind: srccache.KindMTASTS, Domain: domain, Fetched: now, Checked: now,
		Expires: now.Add(24 * time.Hour), Refresh: now.Add(12 * time.Hour),
		MTASTS: &srccache.MTASTS{ID: id, Policy: &mtasts.Policy{Mode: mode, MX: []string{mx}, MaxAge: 86400}}}
}

// SourceEntry is what the monitor judges for an MTA-STS policy: the
// policy enforcing it answers, Testing for a testing one, nothing for
// mode none.
func TestSourceEntry(t *testing.T) {
	now := time.Now()
	if SourceEntry(stsRecord("example.com", "7", mtasts.ModeNone, "mx1.example.com", now)) != nil {
		t.Fatal("an entry for mode none")
	}
	en := SourceEntry(stsRecord("example.com", "7", mtasts.ModeEnforce, "mx1.example.com", now))
	if en.Policy.Text != "secure match=mx1.example.com servername=hostname" || en.Testing || en.Source.String() != "MTA-STS policy id 7" {
		t.Fatalf("entry %+v", en)
	}
	tn := SourceEntry(stsRecord("example.com", "7", mtasts.ModeTesting, "mx1.example.com", now))
	if !tn.Testing || tn.Policy.Text != "secure match=mx1.example.com servername=hostname" {
		t.Fatalf("testing entry %+v", tn)
	}
}

// TestMonitorRestoredMTASTS: MTA-STS policies restored from the cache's
// snapshot at start are checked within seconds, with no fetch: an enforce
// domain whose MX certificate has expired, or names a host outside the
// policy's mx list, is an outbound_probe_failed event (the alert) sourced
// "MTA-STS policy id …"; for a testing policy the watch record says what
// enforcing it would do ("would defer" and why, or delivers). A refetched
// policy with a new id is checked again soon; a domain whose policy went
// to mode none is no longer monitored.
func TestMonitorRestoredMTASTS(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	now := time.Now()
	farm.Serve(t, "127.0.0.51", &tls.Config{Certificates: []tls.Certificate{
		ca.Issue(t, []string{"mx.expired.test"}, now.Add(-60*24*time.Hour), now.Add(-24*time.Hour))}})
	farm.GoodMX(t, "127.0.0.52", time.Time{}, "mx.other.test")
	farm.PlainMX(t, "127.0.0.53")
	farm.GoodMX(t, "127.0.0.54", time.Time{}, "mx.good.test")
	z.MX(t, "expired.test", 10, "mx.expired.test", "127.0.0.51")
	z.MX(t, "mismatch.test", 10, "mx.mismatch.test", "127.0.0.52")
	z.MX(t, "plain.test", 10, "mx.plain.test", "127.0.0.53")
	z.MX(t, "good.test", 10, "mx.good.test", "127.0.0.54")

	path := filepath.Join(t.TempDir(), "probes.json")
	old, _ := srccache.New(srccache.Options{Path: path})
	for _, r := range []*srccache.Record{
		stsRecord("expired.test", "e1", mtasts.ModeEnforce, "mx.expired.test", now),
		stsRecord("mismatch.test", "m1", mtasts.ModeEnforce, "mx.mismatch.test", now),
		stsRecord("plain.test", "p1", mtasts.ModeTesting, "mx.plain.test", now),
		stsRecord("good.test", "g1", mtasts.ModeTesting, "mx.good.test", now),
		stsRecord("none.test", "n1", mtasts.ModeNone, "mx.good.test", now),
	} {
		_ = old.Put(r)
	}
	if err := old.Save(); err != nil {
		t.Fatal(err)
	}
	c, _ := srccache.New(srccache.Options{Path: path})
	if rep, err := c.Load(now); err != nil || rep.Records != 5 {
		t.Fatalf("Load: %+v, %v", rep, err)
	}

	ring := events.NewRing(100)
	eng := New(buildStore(t, "outbound: {}\n"), nil, ring, quietLogger())
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid", Logger: quietLogger()})
	rec := &recorder{probe: p.Probe}
	m := &Monitor{Engine: eng, Probe: rec.Probe, Logger: quietLogger(), firstDelay: 10 * time.Millisecond, maxGap: 50 * time.Millisecond}
	start := time.Now()
	runScheduled(t, m, c)
	waitCalls(t, rec, 4)
	t.Logf("4 restored MTA-STS domains checked %v after start", time.Since(start).Round(time.Millisecond))

	byRule := map[string]events.Event{}
	for _, ev := range ring.Recent(100) {
		byRule[ev.Rule] = ev
	}
	for d, id := range map[string]string{"expired.test": "e1", "mismatch.test": "m1"} {
		ev, ok := byRule[d]
		if !ok || ev.Kind != events.OutboundProbeFailed || ev.Source != "MTA-STS policy id "+id || ev.Action != string(events.OutboundProbeFailed) ||
			!strings.HasPrefix(ev.Reason, "mail to "+d+" is deferred: policy secure match=mx."+d) {
			t.Errorf("%s: event %+v", d, ev)
		}
	}
	if ev := byRule["plain.test"]; ev.Kind != events.OutboundProbeFailed || ev.Action != "testing" {
		t.Errorf("plain.test (testing): event %+v", ev)
	}
	if ev, ok := byRule["good.test"]; ok {
		t.Errorf("good.test: event %+v", ev)
	}
	if r := c.Get(srccache.KindWatch, "mta-sts:plain.test"); r == nil || !r.Watch.Testing || !strings.Contains(r.Watch.Defer, "STARTTLS") {
		t.Errorf("plain.test watch: %+v", r)
	}
	if r := c.Get(srccache.KindWatch, "mta-sts:good.test"); r == nil || r.Watch.Defer != "" || r.Watch.Status != probe.StatusOK || r.Watch.ID != "g1" {
		t.Errorf("good.test watch: %+v", r)
	}
	if r := c.Get(srccache.KindWatch, "mta-sts:none.test"); r != nil {
		t.Errorf("none.test (mode none) is watched: %+v", r)
	}

	// A refetched policy with a new id: checked again soon.
	fresh := stsRecord("good.test", "g2", mtasts.ModeTesting, "mx.good.test", time.Now())
	_ = c.Put(fresh)
	m.SyncSource(fresh)
	waitCalls(t, rec, 5)
	if r := c.Get(srccache.KindWatch, "mta-sts:good.test"); r == nil || r.Watch.ID != "g2" || r.Watch.Probed.Before(fresh.Fetched) {
		t.Errorf("good.test after its new policy: %+v", r.Watch)
	}
	// A policy gone to mode none: no longer monitored.
	gone := stsRecord("expired.test", "e2", mtasts.ModeNone, "mx.expired.test", time.Now())
	_ = c.Put(gone)
	m.SyncSource(gone)
	if r := c.Get(srccache.KindWatch, "mta-sts:expired.test"); r != nil {
		t.Errorf("expired.test still watched after mode none: %+v", r)
	}
}

// TestMonitorMTASTSTableDecides: an MTA-STS policy in the cache for a
// domain the table decides (its own entry or a .parent one) is not what
// Postfix gets, so the monitor neither probes it nor alerts under it:
// not when restored, not when fetched, and no longer once a reload adds
// the domain to the table (an override of a broken MTA-STS domain).
func TestMonitorMTASTSTableDecides(t *testing.T) {
	now := time.Now()
	c, _ := srccache.New(srccache.Options{})
	for _, d := range []string{"override.test", "sub.parent.test", "free.test"} {
		_ = c.Put(stsRecord(d, "1", mtasts.ModeEnforce, "mx."+d, now))
	}
	ring := events.NewRing(100)
	eng := New(buildStore(t, "outbound:\n  override.test: may\n  .parent.test: encrypt\n"), nil, ring, quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelSecure: {OK: true}}}
	rec := &recorder{probe: func(context.Context, string) (*probe.Result, error) { return ok, nil }}
	m := &Monitor{Engine: eng, Probe: rec.Probe, Logger: quietLogger(), firstDelay: 10 * time.Millisecond, maxGap: 20 * time.Millisecond}
	runScheduled(t, m, c)
	waitCalls(t, rec, 1)
	// A fetch of a table-decided domain's policy (SyncSource) adds no watch.
	fetched := stsRecord("override.test", "2", mtasts.ModeEnforce, "mx.override.test", time.Now())
	_ = c.Put(fetched)
	m.SyncSource(fetched)
	time.Sleep(300 * time.Millisecond) // their checks would have come
	if calls := waitCalls(t, rec, 1); !slices.Equal(calls, []string{"free.test"}) {
		t.Errorf("probes %v, want free.test only", calls)
	}
	for _, d := range []string{"override.test", "sub.parent.test"} {
		if r := c.Get(srccache.KindWatch, srccache.MTASTSWatchKey(d)); r != nil {
			t.Errorf("%s: watched under its MTA-STS policy though the table decides it: %+v", d, r.Watch)
		}
		for _, ev := range ring.Recent(100) {
			if ev.Rule == d {
				t.Errorf("%s: alerted under a policy Postfix does not get: %+v", d, ev)
			}
		}
	}
	// A reload that lists free.test ends its MTA-STS watch.
	eng.Swap(buildStore(t, "outbound:\n  override.test: may\n  .parent.test: encrypt\n  free.test: encrypt\n"))
	m.Sync()
	if r := c.Get(srccache.KindWatch, srccache.MTASTSWatchKey("free.test")); r != nil {
		t.Errorf("free.test: MTA-STS watch kept after the table listed it: %+v", r.Watch)
	}
}

// TestMonitorMTASTSDaneOrIdle: an MTA-STS domain DANE decides (Postfix
// gets the DANE answer) or nobody looked up for a week is not probed
// under its MTA-STS policy.
func TestMonitorMTASTSDaneOrIdle(t *testing.T) {
	now := time.Now()
	c, _ := srccache.New(srccache.Options{})
	for _, d := range []string{"dane.test", "idle.test", "free.test"} {
		r := stsRecord(d, "1", mtasts.ModeEnforce, "mx."+d, now)
		if d == "idle.test" {
			r.Checked = now.Add(-8 * 24 * time.Hour)
		}
		_ = c.Put(r)
	}
	_ = c.Put(&srccache.Record{Kind: srccache.KindDANE, Domain: "dane.test", Checked: now, Expires: now.Add(time.Hour),
		Refresh: now.Add(time.Hour), Answer: "dane-only"})
	ring := events.NewRing(100)
	eng := New(buildStore(t, "outbound: {}\n"), nil, ring, quietLogger())
	ok := &probe.Result{Status: probe.StatusOK, Levels: map[string]probe.LevelVerdict{probe.LevelSecure: {OK: true}}}
	rec := &recorder{probe: func(context.Context, string) (*probe.Result, error) { return ok, nil }}
	m := &Monitor{Engine: eng, Probe: rec.Probe, Logger: quietLogger(), firstDelay: 10 * time.Millisecond, maxGap: 20 * time.Millisecond}
	runScheduled(t, m, c)
	waitCalls(t, rec, 1)
	time.Sleep(300 * time.Millisecond) // their checks would have come
	if calls := waitCalls(t, rec, 1); !slices.Equal(calls, []string{"free.test"}) {
		t.Errorf("probes %v, want free.test only", calls)
	}
	for _, d := range []string{"dane.test", "idle.test"} {
		if r := c.Get(srccache.KindWatch, srccache.MTASTSWatchKey(d)); r != nil {
			t.Errorf("%s: watched under its MTA-STS policy: %+v", d, r.Watch)
		}
	}
}

// TestMonitorNewPolicyNoOldVerdict: what a probe found under an MTA-STS
// policy is not shown for the next one (the status page's Monitor
// column): a new policy id, written soon for its check or met by a check
// whose probe failed, carries no verdict until a probe judges it.
func TestMonitorNewPolicyNoOldVerdict(t *testing.T) {
	now := time.Now()
	c, _ := srccache.New(srccache.Options{})
	old := stsRecord("example.test", "1", mtasts.ModeEnforce, "mx1.example.test", now)
	_ = c.Put(old)
	probed := func() {
		_ = c.Put(&srccache.Record{Kind: srccache.KindWatch, Domain: srccache.MTASTSWatchKey("example.test"), Checked: now, Fetched: now,
			Refresh: now.Add(-time.Minute), Expires: now.Add(24 * time.Hour), Watch: &srccache.Watch{Probed: now, Status: probe.StatusOK,
				Policy: SourceEntry(old).Policy.Text, Level: "secure", ID: "1"}})
	}
	probed()
	eng := New(buildStore(t, "outbound: {}\n"), nil, events.NewRing(10), quietLogger())
	m := &Monitor{Engine: eng, Logger: quietLogger(), Probe: func(context.Context, string) (*probe.Result, error) {
		return nil, fmt.Errorf("probe: %w", probe.ErrRateLimited)
	}}
	m.Register(srccache.NewScheduler(c, srccache.SchedulerOptions{}), c)
	m.Sync()
	verdict := func(when string) {
		t.Helper()
		r := c.Get(srccache.KindWatch, srccache.MTASTSWatchKey("example.test"))
		if r == nil || r.Watch == nil || r.Watch.ID != "2" {
			t.Fatalf("%s: watch %+v", when, r)
		}
		if w := r.Watch; !w.Probed.IsZero() || w.Status != "" || w.Defer != "" || len(w.Findings) != 0 {
			t.Errorf("%s: the verdict of policy 1 shown for policy 2: %+v", when, w)
		}
	}
	// A fetch brings policy 2, whose mx the old probe never judged.
	cur := stsRecord("example.test", "2", mtasts.ModeEnforce, "mx2.example.test", now)
	_ = c.Put(cur)
	m.SyncSource(cur)
	verdict("after the fetch")
	// Policy 2 arrives without SyncSource (a fleet peer fetched it) and
	// the check's probe is refused by the rate limit.
	probed()
	m.handle(context.Background(), srccache.MTASTSWatchKey("example.test"), c.Get(srccache.KindWatch, srccache.MTASTSWatchKey("example.test")))
	verdict("after a failed check")
}
