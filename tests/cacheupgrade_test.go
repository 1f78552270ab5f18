package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestCacheUpgradedInPlace: the daemon binary started on the files of an
// earlier version — a probe cache (version 1: results and learned
// policies) and a separate DANE/MTA-STS snapshot, sources.json beside it —
// answers the learned policy and the cached MTA-STS policy at once; at
// shutdown it writes one file of the new format at the probe cache's path,
// keeps the old probe cache as FILE.v1, and a restart answers the same
// from the new file alone.
func TestCacheUpgradedInPlace(t *testing.T) {
	bin := daemonBinary(t)
	dir := t.TempDir()
	now := time.Now().UTC().Truncate(time.Second)
	stamp := now.Format(time.RFC3339)
	cache := filepath.Join(dir, "probes.json")
	old := `{"version":1,"saved":"` + stamp + `","entries":[],"learned":[{"domain":"kept.example","first_learned":"` +
		stamp + `","last_confirmed":"` + stamp + `"}]}`
	writeFile(t, cache, old)
	sts := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "sts.example", Fetched: now, Checked: now,
		Expires: now.Add(24 * time.Hour), Refresh: now.Add(12 * time.Hour), Answer: "secure match=mx1.sts.example servername=hostname",
		MTASTS: &srccache.MTASTS{ID: "1", Policy: &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"mx1.sts.example"}, MaxAge: 86400}}}
	b, err := json.Marshal(map[string]any{"version": 1, "saved": now, "records": []*srccache.Record{sts}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sources.json"), string(b))
	table := filepath.Join(dir, "table.yaml")
	writeFile(t, table, "defaults:\n  learn: enforce\noutbound:\n  bank.example: encrypt\n")

	answers := func(t *testing.T) {
		d := harness.StartDaemon(t, bin, table, "--probe-cache", cache)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cl, err := socketmap.Dial(ctx, d.Addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for key, want := range map[string]string{"kept.example": "encrypt", "sts.example": sts.Answer} {
			if r, err := cl.Lookup(ctx, "tls_policy", key); err != nil || r.Status != socketmap.StatusOK || r.Data != want {
				t.Errorf("%s = %+v, %v; want OK %s\n%s", key, r, err, want, d.Stderr())
			}
		}
	}
	t.Run("old files", answers) // the daemon stops at the subtest's end
	if b, err := os.ReadFile(cache + ".v1"); err != nil || string(b) != old {
		t.Fatalf("old probe cache not kept as %s.v1: %q, %v", cache, b, err)
	}
	data, err := os.ReadFile(cache)
	if err != nil || !bytes.Contains(data, []byte(`"version":2`)) || !strings.Contains(string(data), `"kept.example"`) ||
		!strings.Contains(string(data), `"sts.example"`) {
		t.Fatalf("cache file after shutdown: %v\n%s", err, data)
	}
	if err := os.Remove(filepath.Join(dir, "sources.json")); err != nil {
		t.Fatal(err)
	}
	t.Run("new file", answers)
}
