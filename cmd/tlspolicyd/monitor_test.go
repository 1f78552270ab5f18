package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// TestServeMonitorsRestoredMTASTS: an MTA-STS enforce policy restored
// from the cache file at start, with no lookup and no refetch, is checked
// by the monitor within seconds of start: its MX offers no STARTTLS, so
// the daemon raises outbound_probe_failed (source "MTA-STS policy id …")
// and alerts, before any mail is stuck; the status page's /api/table
// says what the probe found.
func TestServeMonitorsRestoredMTASTS(t *testing.T) {
	var mu sync.Mutex
	var alerts []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		alerts = append(alerts, string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	// Registered before serve starts: runs once it has stopped and
	// flushed its pending alerts.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(strings.Join(alerts, "\n"), "sts.test") {
			t.Errorf("no alert names sts.test: %q", alerts)
		}
	})

	ca := probetest.NewCA(t)
	farm := probetest.NewFarm(t, ca)
	farm.PlainMX(t, "127.0.0.61")
	res := sourcetest.NewResolver(t)
	res.Add(t, "sts.test. 300 IN MX 10 mx1.sts.test.")
	res.Add(t, "mx1.sts.test. 300 IN A 127.0.0.61")

	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("outbound: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "sources.json")
	c, _ := srccache.New(srccache.Options{Path: snap})
	now := time.Now()
	_ = c.Put(&srccache.Record{Kind: srccache.KindMTASTS, Domain: "sts.test", Fetched: now, Checked: now,
		Expires: now.Add(24 * time.Hour), Refresh: now.Add(12 * time.Hour), Answer: "secure match=mx1.sts.test servername=hostname",
		MTASTS: &srccache.MTASTS{ID: "7", Policy: &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"mx1.sts.test"}, MaxAge: 86400}}})
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	addrs := startServe(t, []string{"http"}, "--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", filepath.Join(dir, "probes.json"), "--sources-cache", snap, "--event-log", "",
		"--resolver", res.Addr, "--allow-private", "--probe-port", strconv.Itoa(farm.Port), "--alert-webhook", hook.URL)

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := get(t, "http://"+addrs["http"]+"/api/events")
		if s := string(body); strings.Contains(s, "outbound_probe_failed") && strings.Contains(s, "MTA-STS policy id 7") {
			if !strings.Contains(s, "mail to sts.test is deferred") {
				t.Errorf("event: %s", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outbound_probe_failed event for the restored policy within 30 s: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("restored MTA-STS domain checked and its failure published %v after start", time.Since(start).Round(100*time.Millisecond))
	_, body := get(t, "http://"+addrs["http"]+"/api/table")
	if !strings.Contains(string(body), `"monitor": "defers: mx1.sts.test[127.0.0.61]`) {
		t.Errorf("/api/table lacks the monitor's verdict for sts.test: %s", body)
	}
}
