package tests

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// The table's files against the daemon binary: what it reads, what it
// refuses, what it reveals. No Postfix needed: lookups go over socketmap.

// runBinary runs the daemon binary with args and fails t if it has not
// exited within 15 s. It returns the exit code and stdout+stderr.
func runBinary(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, daemonBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tlspolicyd %s still running after 15 s (killed); output:\n%s", strings.Join(args, " "), out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("tlspolicyd %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// lookup asks the daemon's tls_policy map for key over socketmap and
// returns the reply's data ("" for NOTFOUND).
func lookup(t *testing.T, d *harness.Daemon, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := socketmap.Dial(ctx, d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Lookup(ctx, "tls_policy", key)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data
}

// waitLog waits up to reloadWithin for the daemon's log, after its
// first n bytes, to contain want, and returns that new part of the log.
func waitLog(t *testing.T, d *harness.Daemon, n int, want, after string) string {
	t.Helper()
	var got string
	if !harness.WaitFor(context.Background(), reloadWithin, func() bool {
		got = d.Stderr()[n:]
		return strings.Contains(got, want)
	}) {
		t.Fatalf("%s: the daemon logged no %q within %v; new log:\n%s", after, want, reloadWithin, got)
	}
	return got
}

// TestTableFIFO: a named pipe in the table directory or as an include
// used to hang check, the daemon's start, reloads, SIGHUP and then
// SIGTERM. It is refused at once with its place; the daemon keeps its
// old table and still stops on SIGTERM within 5 s (the harness's stop).
func TestTableFIFO(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), "outbound:\n  fifo.example: encrypt\n")
	pipe := filepath.Join(dir, "b.yaml")
	if err := syscall.Mkfifo(pipe, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runBinary(t, "check", "--table", dir)
	if code != 1 || !strings.Contains(out, pipe+": error: not a regular file (a named pipe)") {
		t.Errorf("check: exit %d, output:\n%s\nwant exit 1 and the pipe refused", code, out)
	}
	code, out = runBinary(t, "serve", "--table", dir, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--event-log", "", "--probe-cache", "", "--resolver", harness.NoResolver)
	if code != 1 || !strings.Contains(out, pipe+": not a regular file (a named pipe)") {
		t.Errorf("serve: exit %d, output:\n%s\nwant exit 1 and the pipe refused", code, out)
	}

	// A running daemon whose table comes to include a pipe.
	d, path := startDaemon(t, "outbound:\n  fifo.example: encrypt\n", false)
	inc := filepath.Join(filepath.Dir(path), "postfix-policy")
	if err := syscall.Mkfifo(inc, 0o644); err != nil {
		t.Fatal(err)
	}
	n := len(d.Stderr())
	writeFile(t, path, "outbound:\n  fifo.example: encrypt\ninclude:\n  - postfix: postfix-policy\n")
	waitLog(t, d, n, "table.yaml:4: include postfix-policy: not a regular file (a named pipe)", "include of a pipe")
	n = len(d.Stderr())
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, n, "include postfix-policy: not a regular file (a named pipe)", "SIGHUP")
	if got := lookup(t, d, "fifo.example"); got != "encrypt" {
		t.Errorf("fifo.example answers %q, want the old table's encrypt", got)
	}
}
