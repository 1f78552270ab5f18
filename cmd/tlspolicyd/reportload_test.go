package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// TestReportLoadOnLookups measures what report requests cost the lookups:
// socketmap latency at 4 connections alone, then while 6 clients request
// /api/report in a loop over an event log of about 9 MiB. It prints the
// figures (bench/README.md records them) and runs only with
// TLSPOLICYD_MEASURE=1: timings on a shared machine are not a pass/fail.
func TestReportLoadOnLookups(t *testing.T) {
	if os.Getenv("TLSPOLICYD_MEASURE") == "" {
		t.Skip("a measurement: set TLSPOLICYD_MEASURE=1")
	}
	dir := t.TempDir()
	evlog := filepath.Join(dir, "events.jsonl")
	var b strings.Builder
	now := time.Now().UTC()
	for i := range 40000 {
		fmt.Fprintf(&b, `{"time":%q,"kind":"inbound_blocked","domain":"d%d.example","rule":"bank-partners","source":"t.yaml:3","action":"450 4.7.10 TLS is required for mail from d%d.example; ask its postmaster to enable STARTTLS","reason":"TLS is required; the client sent without TLS","client":"mx.d%d.example[192.0.2.1]","sender":"a@d%d.example"}`+"\n",
			now.Add(-time.Duration(40000-i)*time.Second).Format(time.RFC3339Nano), i%5000, i%5000, i%5000, i%5000)
	}
	if err := os.WriteFile(evlog, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := startServe(t, []string{"socketmap", "http"},
		"--table", "testdata/table", "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--resolver", "127.0.0.1:1", "--event-log", evlog, "--event-log-max-mb", "64")
	measure := func(d time.Duration) (p50, p99 time.Duration, n int) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl, err := socketmap.Dial(context.Background(), addrs["socketmap"], time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				defer cl.Close()
				var mine []time.Duration
				for ctx.Err() == nil {
					st := time.Now()
					if _, err := cl.Lookup(context.Background(), "tls_policy", "bank.example"); err != nil {
						t.Error(err)
						return
					}
					mine = append(mine, time.Since(st))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(lat)
		if len(lat) == 0 {
			return 0, 0, 0
		}
		return lat[len(lat)/2], lat[len(lat)*99/100], len(lat)
	}
	p50, p99, n := measure(3 * time.Second)
	t.Logf("lookups alone: %d, p50 %v, p99 %v", n, p50, p99)
	for _, mode := range []string{"same since", "a different since each"} {
		stop := make(chan struct{})
		var reports atomic.Int64
		var wg sync.WaitGroup
		for c := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					since := "24h"
					if mode != "same since" {
						since = fmt.Sprintf("%dm", 600+c*100+i%50)
					}
					resp, err := http.Get("http://" + addrs["http"] + "/api/report?since=" + since)
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					reports.Add(1)
				}
			}()
		}
		p50, p99, n := measure(5 * time.Second)
		close(stop)
		wg.Wait()
		t.Logf("lookups with 6 report clients (%s): %d, p50 %v, p99 %v; %d reports answered", mode, n, p50, p99, reports.Load())
	}
}
