package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
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

// TestRunSavesAfterScheduler: the cache is saved at shutdown only once
// the scheduler has stopped: what a refresh handler running at shutdown
// writes as it ends (a monitor check's result, a probe cache refresh) is
// in the file when Run returns, not lost to the process's exit.
func TestRunSavesAfterScheduler(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "probes.json")
	cfg, err := loadServeConfig(t, "--table", "testdata/table", "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--probe-cache", cache, "--event-log", "", "--resolver", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(cfg, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	const kind = srccache.Kind("test-late")
	started := make(chan struct{})
	d.sched.Handle(kind, srccache.KindOptions{}, func(ctx context.Context, key string, _ *srccache.Record) {
		close(started)
		<-ctx.Done()
		time.Sleep(time.Second) // the handler's last write comes late
		_ = d.srcCache.Put(&srccache.Record{Kind: kind, Domain: "written-at-shutdown.test", Expires: time.Now().Add(time.Hour)})
	})
	_ = d.srcCache.Put(&srccache.Record{Kind: kind, Domain: "due.test", Refresh: time.Now(), Expires: time.Now().Add(time.Hour)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("the handler did not start within 15 s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of its context ending")
	}
	b, err := os.ReadFile(cache)
	if err != nil || !bytes.Contains(b, []byte("written-at-shutdown.test")) {
		t.Errorf("the cache saved at shutdown lacks the handler's last write (err %v)", err)
	}
}
