// Package tests holds the end-to-end tests that drive real Postfix 3.7 (and
// swaks) against the tlspolicyd binary built from ./cmd/tlspolicyd. They
// need root and the postfix and swaks packages (tests/install-deps.sh) and
// skip otherwise. Reusable pieces live in tests/internal/harness.
package tests

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

var (
	// binDir holds the daemon binary built for this run.
	binDir string

	buildOnce sync.Once
	binPath   string
	buildErr  error

	faultOnce sync.Once
	faultPath string
	faultErr  error
)

func TestMain(m *testing.M) {
	if file := os.Getenv(peakRSSEnv); file != "" {
		os.Exit(peakRSSHelper(file))
	}
	dir, err := os.MkdirTemp("", "tlspolicyd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests: temp dir:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// faultBinary builds ./cmd/tlspolicyd with harness.FaultsTag once per run
// and returns its path.
func faultBinary(t testing.TB) string {
	t.Helper()
	faultOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		faultPath, faultErr = harness.BuildDaemon(ctx, binDir, harness.FaultsTag)
	})
	if faultErr != nil {
		t.Fatalf("cannot test the daemon: %v", faultErr)
	}
	return faultPath
}

// daemonBinary builds ./cmd/tlspolicyd once per run and returns its path;
// it fails t (with the compiler's output) when the build fails.
func daemonBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath, buildErr = harness.BuildDaemon(ctx, binDir)
	})
	if buildErr != nil {
		t.Fatalf("cannot test the daemon: %v", buildErr)
	}
	return binPath
}
