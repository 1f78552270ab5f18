package main

import (
	"testing"
	"time"
)

// TestDurationFlagsTakeDays: duration flags take the syntax of the table
// and the configuration file, days included (--probe-ttl 1d was refused
// while report --since 7d was accepted).
func TestDurationFlagsTakeDays(t *testing.T) {
	cfg, err := loadServeConfig(t, "--probe-ttl", "1d", "--probe-interval", "1d12h", "--alert-interval", "90m")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Probe.TTL != 24*time.Hour || cfg.Probe.Interval != 36*time.Hour || cfg.Alerts.Interval != 90*time.Minute {
		t.Errorf("ttl %v, interval %v, alerts %v; want 24h, 36h, 1h30m", cfg.Probe.TTL, cfg.Probe.Interval, cfg.Alerts.Interval)
	}
	if _, stderr, code := runCLI(t, "serve", "--probe-ttl", "soon"); code != 2 && code != 1 || stderr == "" {
		t.Errorf("--probe-ttl soon: exit %d, stderr %q; want a usage error", code, stderr)
	}
}
