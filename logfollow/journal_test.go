package logfollow

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJournal runs a fake journalctl that prints records and records its
// arguments: the first run starts at the end (-n 0), a restart after the
// cursor it was given.
func TestJournal(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "journalctl")
	argsFile := filepath.Join(dir, "args")
	err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$@" >> `+argsFile+`
echo '{"__CURSOR":"c1","MESSAGE":"one"}'
echo 'not json'
echo '{"__CURSOR":"c2","MESSAGE":"two"}'
exec sleep 60
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	c, stop := run(t, &Journal{Command: []string{script}})
	got := c.waitLines(t, 2)
	stop()
	_, pos := c.snapshot()
	if len(got) != 2 || !strings.Contains(got[1], `"two"`) || pos.Cursor != "c2" {
		t.Fatalf("lines %q, position %+v", got, pos)
	}
	c2, stop2 := run(t, &Journal{Command: []string{script}, Start: &pos, Restart: time.Millisecond})
	c2.waitLines(t, 2)
	stop2()
	b, _ := os.ReadFile(argsFile)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "-f -o json --no-pager -n 0 SYSLOG_FACILITY=2" || lines[1] != "-f -o json --no-pager --after-cursor=c2 SYSLOG_FACILITY=2" {
		t.Fatalf("journalctl arguments:\n%s", b)
	}
}

// TestJournalWithoutJournalctl: a missing journalctl is an error Run
// returns, not a loop of restarts.
func TestJournalWithoutJournalctl(t *testing.T) {
	j := &Journal{Command: []string{filepath.Join(t.TempDir(), "no-journalctl")}, Restart: time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- j.Run(context.Background(), func(string, Position) {}) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil without journalctl")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run keeps restarting a missing journalctl")
	}
}
