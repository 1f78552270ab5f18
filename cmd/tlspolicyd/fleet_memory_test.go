package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/redistest"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// TestFleetRedisMemory measures what domains cost Redis when each has a
// learned record, a probe result (one MX, one address, a two-certificate
// chain) and an MTA-STS policy. It fails if the cost grows past 2 KiB a
// record. CI writes 10,000 domains; README's figure is from
// TLSPOLICYD_FLEET_DOMAINS=100000.
func TestFleetRedisMemory(t *testing.T) {
	domains := 10000
	if v, err := strconv.Atoi(os.Getenv("TLSPOLICYD_FLEET_DOMAINS")); err == nil && v > 0 {
		domains = v
	}
	srv := redistest.Start(t, redistest.Binary(t))
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	before := usedMemory(t, rdb)

	cfg := config.Default()
	cfg.SharedCache, cfg.SharedCacheNode = "redis://"+srv.Addr, "mx1"
	fl, err := newFleet(cfg, quietLog(), events.NewRing(10))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { fl.Run(runCtx); close(done) }()
	now := time.Now()
	exp := now.Add(24 * time.Hour)
	for i := range domains {
		d := "domain" + strconv.Itoa(i) + ".example"
		fl.publish(fleetLearned, d, exp, probe.LearnedRecord{Domain: d, FirstLearned: now, LastConfirmed: now})
		cert := probe.CertInfo{Subject: "CN=mx." + d, Issuer: "CN=R11,O=Let's Encrypt,C=US", CommonName: "mx." + d,
			DNSNames: []string{"mx." + d}, NotBefore: now, NotAfter: exp}
		fl.publish(fleetProbe, d, exp, &probe.Result{Target: d, NextHop: d, Port: 25, Time: now, Expires: exp, Status: "ok",
			MX: []probe.MXResult{{Host: "mx." + d, Preference: 10, Addrs: []probe.AddrResult{{Addr: "192.0.2.1", Port: 25,
				Reached: true, STARTTLS: true, TLS: &probe.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384",
					Chain: []probe.CertInfo{cert, {Subject: "CN=R11", Issuer: "CN=ISRG Root X1", NotBefore: now, NotAfter: exp}}}}}}}})
		fl.sourceChanged(nil, &srccache.Record{Kind: srccache.KindMTASTS, Domain: d, Fetched: now, Checked: now, Expires: exp,
			Refresh: now.Add(time.Hour), Answer: "secure match=mx." + d + " servername=hostname",
			MTASTS: &srccache.MTASTS{ID: "20261207T000000", Policy: &mtasts.Policy{Mode: "enforce", MX: []string{"mx." + d}, MaxAge: 604800}}})
		for fl.Stats().Queued > 5000 { // the queue is bounded: let the writer keep up
			time.Sleep(time.Millisecond)
		}
	}
	deadline := time.Now().Add(time.Duration(domains)*3*time.Millisecond + 30*time.Second)
	for fl.Stats().Written < uint64(3*domains) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d records written (dropped %d)", fl.Stats().Written, 3*domains, fl.Stats().Dropped)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	n, err := rdb.DBSize(ctx).Result()
	if err != nil || n != int64(3*domains+1) { // + the node's heartbeat
		t.Fatalf("DBSIZE = %d, %v; want %d", n, err, 3*domains+1)
	}
	used := usedMemory(t, rdb) - before
	perKind := float64(used) / float64(3*domains)
	t.Logf("redis used_memory for %d domains (learned + probe result + MTA-STS each): %.1f MiB (%.0f bytes per record)",
		domains, float64(used)/(1<<20), perKind)
	if perKind > 2048 {
		t.Errorf("%.0f bytes per record, want at most 2048", perKind)
	}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}
