package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/redistest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// fleetState is what /api/fleet says.
type fleetState struct {
	Up      bool   `json:"link_up"`
	Applied uint64 `json:"applied"`
	Nodes   []struct {
		Node string `json:"node"`
	} `json:"nodes"`
	Events []struct {
		Node string `json:"node"`
	} `json:"events"`
}

func fleetOf(t *testing.T, httpAddr string) fleetState {
	t.Helper()
	var st fleetState
	code, body := get(t, "http://"+httpAddr+"/api/fleet")
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("/api/fleet: %d %s", code, body)
	}
	return st
}

func pollUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeFleet: two daemons and one redis-server. A fetches an MTA-STS
// policy and learns a domain; B, whose resolver answers nothing, answers
// both from what A shared, without a fetch of its own. Then, under 32
// connections of lookups on both nodes, redis-server is SIGKILLed and
// restarted: no lookup fails or changes its answer, both nodes report the
// link down and up again, and a policy A fetched meanwhile reaches B.
func TestServeFleet(t *testing.T) {
	rsrv := redistest.Start(t, redistest.Binary(t))
	w := newSourcesWorld(t, "sts.test", "sts2.test")
	w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.sts.test"))
	farm := probetest.NewFarm(t, probetest.NewCA(t))
	farm.GoodMX(t, "127.0.0.31", time.Time{}, "mx.tls.example")
	w.dns.Add(t, "tls.example. 300 IN MX 10 mx.tls.example.")
	w.dns.Add(t, "mx.tls.example. 300 IN A 127.0.0.31")

	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("defaults:\n  learn: enforce\noutbound:\n  listed.test: may\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--event-log", "", "--shared-cache", "redis://" + rsrv.Addr + "/0", "--shared-cache-cluster", "t1",
		"--allow-private", "--probe-timeout", "3s", "--helo", "test.invalid"}
	argsA := append(w.args("--probe-port", strconv.Itoa(farm.Port), "--shared-cache-node", "a",
		"--probe-cache", filepath.Join(dir, "a-probes.json"), "--sources-cache", filepath.Join(dir, "a-sources.json")), common...)
	a := startServe(t, []string{"socketmap", "http"}, argsA...)
	clA := dialSocketmap(t, a["socketmap"])
	const sts = "OK secure match=mx1.sts.test servername=hostname"
	if got := lookup(t, clA, "tls_policy", "sts.test"); got != sts {
		t.Fatalf("A: sts.test = %q, want %q", got, sts)
	}
	lookup(t, clA, "tls_policy", "tls.example") // schedules the probe learning it
	pollUntil(t, "A to learn tls.example", 30*time.Second, func() bool {
		return lookup(t, clA, "tls_policy", "tls.example") == "OK encrypt"
	})
	fetches := w.host.Requests()

	// B's resolver is a closed port: whatever it answers, it has from A.
	argsB := append([]string{"--resolver", "127.0.0.1:1", "--https-ca", w.caFile, "--mta-sts-port", strconv.Itoa(w.host.Port),
		"--probe-port", "9", "--shared-cache-node", "b",
		"--probe-cache", filepath.Join(dir, "b-probes.json"), "--sources-cache", filepath.Join(dir, "b-sources.json")}, common...)
	b := startServe(t, []string{"socketmap", "http"}, argsB...)
	clB := dialSocketmap(t, b["socketmap"])
	// B has resynchronised once it applied every record A wrote.
	rdb := redis.NewClient(&redis.Options{Addr: rsrv.Addr})
	defer rdb.Close()
	recs, err := rdb.Keys(context.Background(), "tlspolicyd:t1:rec:*").Result()
	if err != nil || len(recs) < 3 {
		t.Fatalf("records in Redis: %v, %v; want at least the policy, the learned record and a probe result", recs, err)
	}
	pollUntil(t, "B's resync", 10*time.Second, func() bool { return fleetOf(t, b["http"]).Applied >= uint64(len(recs)) })
	if got := lookup(t, clB, "tls_policy", "sts.test"); got != sts {
		t.Errorf("B: sts.test = %q, want A's policy %q", got, sts)
	}
	if got := lookup(t, clB, "tls_policy", "tls.example"); got != "OK encrypt" {
		t.Errorf("B: tls.example = %q, want the encrypt A learned", got)
	}
	if n := w.host.Requests(); n != fetches {
		t.Errorf("policy fetches went from %d to %d: B fetched for itself", fetches, n)
	}
	if st := fleetOf(t, a["http"]); !st.Up || len(st.Nodes) != 2 || st.Nodes[0].Node != "a" || st.Nodes[1].Node != "b" {
		t.Errorf("A's /api/fleet = %+v; want link up, nodes a and b", st)
	}

	// 32 connections of lookups on both nodes while Redis dies and returns.
	want := map[string]string{"sts.test": sts, "tls.example": "OK encrypt", "listed.test": "OK may"}
	var lookups, failures atomic.Int64
	var firstFailure atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 32 {
		addr := a["socketmap"]
		if i%2 == 1 {
			addr = b["socketmap"]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := socketmap.Dial(ctx, addr, 5*time.Second)
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
				return
			}
			defer cl.Close()
			for ctx.Err() == nil {
				for key, exp := range want {
					lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					r, err := cl.Lookup(lctx, "tls_policy", key)
					cancel()
					if ctx.Err() != nil {
						return
					}
					lookups.Add(1)
					if got := r.Status.String() + " " + r.Data; err != nil || got != exp {
						failures.Add(1)
						firstFailure.CompareAndSwap(nil, key+": "+got)
					}
				}
			}
		}()
	}
	rsrv.Kill()
	pollUntil(t, "both links down", 15*time.Second, func() bool { return !fleetOf(t, a["http"]).Up && !fleetOf(t, b["http"]).Up })
	// A fetches a policy while the link is down: it waits in A's queue.
	w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.sts2.test"))
	const sts2 = "OK secure match=mx1.sts2.test servername=hostname"
	if got := lookup(t, clA, "tls_policy", "sts2.test"); got != sts2 {
		t.Fatalf("A: sts2.test = %q", got)
	}
	rsrv.Restart()
	pollUntil(t, "both links up again", 20*time.Second, func() bool { return fleetOf(t, a["http"]).Up && fleetOf(t, b["http"]).Up })
	pollUntil(t, "B to answer the policy A fetched while Redis was down", 10*time.Second, func() bool {
		return lookup(t, clB, "tls_policy", "sts2.test") == sts2
	})
	stop()
	wg.Wait()
	if failures.Load() != 0 || lookups.Load() < 100 {
		t.Fatalf("%d of %d lookups failed or answered wrong (first: %v)", failures.Load(), lookups.Load(), firstFailure.Load())
	}
	t.Logf("%d lookups during the outage and recovery, none failed", lookups.Load())
	// B's report shows the fleet: both nodes, and A's events with A's name.
	pollUntil(t, "A's link events in the fleet's stream", 10*time.Second, func() bool {
		for _, e := range fleetOf(t, b["http"]).Events {
			if e.Node == "a" {
				return true
			}
		}
		return false
	})
	out, errOut, code := runCLI(t, "report", "--server", b["http"], "--fleet")
	if code != 0 || !strings.Contains(out, "Fleet, seen from b: link up") || !strings.Contains(out, "node a ") ||
		!strings.Contains(out, "node b ") || !regexp.MustCompile(`(?m)^  \S+ \S+ UTC  a +fleet_link_down`).MatchString(out) {
		t.Errorf("report --fleet on B (exit %d):\n%s%s", code, out, errOut)
	}
	// The link's down and up are events on both nodes, in the fleet's stream too.
	for _, n := range []map[string]string{a, b} {
		code, body := get(t, "http://"+n["http"]+"/api/events")
		if code != 200 || !strings.Contains(string(body), string(events.FleetLinkDown)) || !strings.Contains(string(body), string(events.FleetLinkUp)) {
			t.Errorf("/api/events lacks the link's down and up: %s", body)
		}
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestFleetOneAlert: two nodes of a fleet see the same failure; the
// webhook gets one alert, not two.
func TestFleetOneAlert(t *testing.T) {
	rsrv := redistest.Start(t, redistest.Binary(t))
	var mu sync.Mutex
	var got []alert.Payload
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alert.Payload
		if json.NewDecoder(r.Body).Decode(&p) == nil {
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		}
	}))
	defer hook.Close()
	var alerters []*alert.Notifier
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, node := range []string{"a", "b"} {
		cfg := config.Default()
		cfg.SharedCache, cfg.SharedCacheNode, cfg.Alerts.Webhook = "redis://"+rsrv.Addr, node, hook.URL
		fl, err := newFleet(cfg, quietLog(), events.NewRing(10))
		if err != nil {
			t.Fatal(err)
		}
		go fl.Run(ctx)
		acfg := alertConfig(cfg, quietLog())
		acfg.Claim, acfg.Delay = fl.Claim, 10*time.Millisecond
		al := alert.New(acfg)
		go al.Run(ctx)
		alerters = append(alerters, al)
	}
	ev := events.Event{Time: time.Now(), Kind: events.OutboundProbeFailed, Domain: "bank.example", Reason: "no STARTTLS offered"}
	for _, al := range alerters {
		al.Notify(ev)
	}
	pollUntil(t, "the alert and the claim left to the other node", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 1 && alerters[0].Stats().ClaimedElsewhere+alerters[1].Stats().ClaimedElsewhere == 1
	})
	time.Sleep(200 * time.Millisecond) // a second alert would have been sent within the 10 ms gathering delay
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d alerts for one failure seen by two nodes, want 1", len(got))
	}
}

func TestBetterSource(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	policy := &srccache.MTASTS{ID: "1", Policy: &mtasts.Policy{Mode: "enforce", MX: []string{"mx.example"}, MaxAge: 86400}}
	fetched := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "d.example", Checked: t0, MTASTS: policy}
	failed := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "d.example", Checked: t0.Add(time.Minute), Error: "lookup failed"}
	none := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "d.example", Checked: t0.Add(time.Minute), MTASTS: &srccache.MTASTS{}}
	newer := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "d.example", Checked: t0.Add(time.Hour), MTASTS: policy}
	for _, c := range []struct {
		name        string
		remote, cur *srccache.Record
		want        bool
	}{
		{"nothing here", fetched, nil, true},
		{"a policy over a later failed attempt", fetched, failed, true},
		{"a policy over a later empty lookup", fetched, none, true},
		{"an older policy over a newer one", fetched, newer, false},
		{"a newer policy", newer, fetched, true},
		{"the same record again", fetched, fetched, false},
		{"a later failed attempt over a policy", failed, fetched, false},
		{"a later empty lookup over a policy", none, fetched, false},
	} {
		if got := betterSource(c.remote, c.cur); got != c.want {
			t.Errorf("%s: betterSource = %v, want %v", c.name, got, c.want)
		}
	}
}
