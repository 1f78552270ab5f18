package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newDaemon refuses an invalid table with the reason, and Run of a daemon
// built from a valid one serves until its context ends, then saves its
// probe cache.
func TestNewDaemonAndRun(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("outbound:\n  bank.example: nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadServeConfig(t, "--table", bad, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--probe-cache", "", "--event-log", "", "--resolver", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if _, err := newDaemon(cfg, &log); err == nil || !strings.Contains(err.Error(), "policy table "+bad+" is invalid") {
		t.Fatalf("newDaemon with an invalid table: %v", err)
	}

	cache := filepath.Join(dir, "probes.json")
	cfg, err = loadServeConfig(t, "--table", "testdata/table", "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--probe-cache", cache, "--event-log", "", "--resolver", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	cancel() // Run stops whenever its context ends, during its start too
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of its context ending")
	}
	if _, err := os.Stat(cache); err != nil {
		t.Errorf("probe cache not saved at shutdown: %v", err)
	}
}
