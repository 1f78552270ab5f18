package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// TestServeLearnOffRecordsNothing: with defaults.learn: off the monitor's
// probe of a domain offering STARTTLS teaches nothing, so switching to
// learn: enforce (and dropping the entry) does not answer that domain
// with an encrypt "learned" while learning was off.
func TestServeLearnOffRecordsNothing(t *testing.T) {
	resolver, port := probeWorld(t)
	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	writeTable := func(body string) {
		t.Helper()
		tmp := table + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, table); err != nil {
			t.Fatal(err)
		}
	}
	writeTable("defaults:\n  learn: \"off\"\noutbound:\n  tls.example: encrypt\n")
	addrs := startServe(t, []string{"socketmap", "http"},
		"--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", filepath.Join(dir, "probes.json"), "--event-log", "",
		"--resolver", resolver, "--probe-port", strconv.Itoa(port), "--allow-private", "--probe-timeout", "3s", "--helo", "test.invalid")

	// The monitor probes tls.example (its first pass starts 5 s after start).
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, "http://"+addrs["http"]+"/api/probes")
		var ps []struct {
			Target string `json:"target"`
			Status string `json:"status"`
		}
		if code == 200 && json.Unmarshal(body, &ps) == nil && len(ps) == 1 && ps[0].Target == "tls.example" && ps[0].Status == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ok probe of tls.example within 30 s: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	writeTable("defaults:\n  learn: enforce\noutbound:\n  other.example: encrypt\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := socketmap.Dial(ctx, addrs["socketmap"], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Wait for the reload: other.example answers once the new table serves.
	for {
		r, err := cl.Lookup(ctx, "tls_policy", "other.example")
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == socketmap.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the learn: enforce table was not loaded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, err := cl.Lookup(ctx, "tls_policy", "tls.example")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != socketmap.StatusNotFound {
		t.Fatalf("tls.example right after learn: off -> enforce = %v %q, want NOTFOUND (nothing learned while off)", r.Status, r.Data)
	}
}
