package tests

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestCorruptProbeCacheKeptAside: the daemon binary, started on a torn
// probe cache, keeps the file aside as FILE.corrupt-<unix time> (the
// original bytes), still enforces the learned policy written before the
// damage, counts it in /metrics and /api/events, alerts, and at shutdown
// saves the salvaged state to the file's own name.
func TestCorruptProbeCacheKeptAside(t *testing.T) {
	bin := daemonBinary(t)
	dir := t.TempDir()
	now := time.Now().UTC().Format(time.RFC3339)
	rec := func(d string) string {
		return `{"domain":"` + d + `","first_learned":"` + now + `","last_confirmed":"` + now + `"}`
	}
	torn := `{"version":1,"saved":"` + now + `","entries":[],"learned":[` + rec("kept.example") + `,` + rec("torn.example")[:30] + "\x00\x00"
	cache := filepath.Join(dir, "probes.json")
	writeFile(t, cache, torn)
	table := filepath.Join(dir, "table.yaml")
	writeFile(t, table, "defaults:\n  learn: enforce\noutbound:\n  bank.example: encrypt\n")

	var mu sync.Mutex
	var alerts []alert.Alert
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alert.Payload
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &p) == nil {
			mu.Lock()
			alerts = append(alerts, p.Alerts...)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	// Runs after the daemon's own cleanup (SIGTERM): shutdown sends the
	// alerts still gathering and saves the probe cache.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		found := false
		for _, a := range alerts {
			found = found || a.Kind == "cache_corrupt" && strings.Contains(a.Title, "Probe cache file damaged")
		}
		if !found {
			t.Errorf("no cache_corrupt alert reached the webhook: %+v", alerts)
		}
		data, err := os.ReadFile(cache)
		if err != nil || !strings.Contains(string(data), `"kept.example"`) || strings.Contains(string(data), "torn.example") {
			t.Errorf("probe cache after shutdown = %q, %v; want the salvaged state", data, err)
		}
	})
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(harness.FreePort(t, "127.0.0.1")))
	d := harness.StartDaemon(t, bin, table, "--probe-cache", cache, "--http", httpAddr, "--alert-webhook", hook.URL)

	asides, _ := filepath.Glob(cache + ".corrupt-*")
	if len(asides) != 1 {
		t.Fatalf("kept aside: %v, want one %s.corrupt-<unix time>\n%s", asides, cache, d.Stderr())
	}
	if b, _ := os.ReadFile(asides[0]); string(b) != torn {
		t.Errorf("%s holds %q, want the original bytes", asides[0], b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := socketmap.Dial(ctx, d.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if r, err := cl.Lookup(ctx, "tls_policy", "kept.example"); err != nil || r.Status != socketmap.StatusOK || r.Data != "encrypt" {
		t.Errorf("kept.example = %+v, %v; want the salvaged learned encrypt", r, err)
	}
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := get("/metrics")
	for _, want := range []string{"\ntlspolicyd_probe_cache_corrupt_total 1\n", "\ntlspolicyd_events_total{kind=\"cache_corrupt\"} 1\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	if ev := get("/api/events?since=1h"); !strings.Contains(ev, `"cache_corrupt"`) || !strings.Contains(ev, asides[0]) {
		t.Errorf("/api/events lacks the cache_corrupt event naming %s:\n%s", asides[0], ev)
	}
}
