package tests

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	code, out, _ := runBinaryRSS(t, 15*time.Second, args...)
	return code, out
}

// runBinaryRSS is runBinary with the time it may take, that also returns
// the process's peak resident memory in bytes, measured by peakRSSHelper.
func runBinaryRSS(t *testing.T, within time.Duration, args ...string) (int, string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	rssFile := filepath.Join(t.TempDir(), "peak-rss")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{daemonBinary(t)}, args...)...)
	cmd.Env = append(os.Environ(), peakRSSEnv+"="+rssFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tlspolicyd %s still running after %v (killed); output:\n%s", strings.Join(args, " "), within, out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("tlspolicyd %s: %v", strings.Join(args, " "), err)
	}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		t.Fatalf("tlspolicyd %s: peak RSS: %v; output:\n%s", strings.Join(args, " "), err, out.String())
	}
	rss, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		t.Fatalf("tlspolicyd %s: peak RSS: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), rss
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

// TestIncludeLeaksNothing: `include: - postfix: /etc/shadow` used to put
// every line of the file in the ERROR log and the first in a
// reload_failed event served by /api/events. Now the log, the event and
// check name the file, the line and the kind of error only.
func TestIncludeLeaksNothing(t *testing.T) {
	const secret = "Sup3rS3cret"
	httpAddr := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	dir := t.TempDir()
	path := filepath.Join(dir, "table.yaml")
	writeFile(t, path, "outbound:\n  leak.example: encrypt\n")
	var shadow strings.Builder
	for i := range 20 {
		shadow.WriteString("user" + itoa(i) + ":$6$" + secret + itoa(i) + "$xyz:19000:0:99999:7:::\n")
	}
	shadowPath := filepath.Join(dir, "shadow")
	writeFile(t, shadowPath, shadow.String())
	d := harness.StartDaemon(t, daemonBinary(t), path, "--http", httpAddr)

	n := len(d.Stderr())
	writeFile(t, path, "outbound:\n  leak.example: encrypt\ninclude:\n  - postfix: "+shadowPath+"\n")
	logged := waitLog(t, d, n, "stopped reading after 5 errors", "include of a shadow file")
	leaks := func(s string) bool {
		s = strings.ToLower(s) // keys are lower-cased before they are checked
		return strings.Contains(s, strings.ToLower(secret)) || strings.Contains(s, "user1")
	}
	if leaks(logged) {
		t.Errorf("the log carries the included file's content:\n%s", logged)
	}
	if got := strings.Count(logged, "level=ERROR"); got > 6 {
		t.Errorf("%d ERROR lines for one included file, want at most 6:\n%s", got, logged)
	}
	var body string
	if !harness.WaitFor(context.Background(), reloadWithin, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/api/events")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, "reload_failed")
	}) {
		t.Fatalf("/api/events has no reload_failed event: %s", body)
	}
	if leaks(body) {
		t.Errorf("/api/events carries the included file's content: %s", body)
	}
	if !strings.Contains(body, shadowPath+":1: invalid key") {
		t.Errorf("/api/events does not name the place and the kind of error: %s", body)
	}
	if got := lookup(t, d, "leak.example"); got != "encrypt" {
		t.Errorf("leak.example answers %q, want the old table's encrypt", got)
	}

	code, out := runBinary(t, "check", "--table", path)
	if code != 1 || leaks(out) || !strings.Contains(out, "stopped reading after 5 errors") {
		t.Errorf("check: exit %d, output:\n%s\nwant exit 1, 5 errors and none of the file's content", code, out)
	}
}

// waitLookup polls the daemon's tls_policy answer for key until it is
// want, and fails t after reloadWithin.
func waitLookup(t *testing.T, d *harness.Daemon, key, want, after string) {
	t.Helper()
	var got string
	if !harness.WaitFor(context.Background(), reloadWithin, func() bool {
		got = lookup(t, d, key)
		return got == want
	}) {
		t.Fatalf("%s: %s answers %q %v later, want %q", after, key, got, reloadWithin, want)
	}
}

// TestTableSymlinks: a table reached through a symbolic link (the table
// file, a *.yaml file of the table directory, the table directory) used
// to never reload when the link's target was edited. The daemon now
// watches the targets' directories and reloads within the usual delay.
func TestTableSymlinks(t *testing.T) {
	bin := daemonBinary(t)
	symlink := func(t *testing.T, target, link string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(t *testing.T, d string) {
		t.Helper()
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("table file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		target := filepath.Join(dir, "git", "table.yaml")
		mkdir(t, filepath.Dir(target))
		writeFile(t, target, "outbound:\n  link.example: encrypt\n")
		link := filepath.Join(dir, "etc", "table.yaml")
		symlink(t, target, link)
		d := harness.StartDaemon(t, bin, link)
		waitLookup(t, d, "link.example", "encrypt", "start")
		writeFile(t, target, "outbound:\n  link.example: verify\n")
		waitLookup(t, d, "link.example", "verify", "target saved in place")
		replaceFile(t, target, "outbound:\n  link.example: secure\n")
		waitLookup(t, d, "link.example", "secure", "target replaced by rename")
	})
	t.Run("yaml link in the table directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		table := filepath.Join(dir, "table")
		mkdir(t, table)
		writeFile(t, filepath.Join(table, "a.yaml"), "outbound:\n  a.example: may\n")
		target := filepath.Join(dir, "git", "b.yaml")
		mkdir(t, filepath.Dir(target))
		writeFile(t, target, "outbound:\n  link.example: encrypt\n")
		symlink(t, target, filepath.Join(table, "b.yaml"))
		d := harness.StartDaemon(t, bin, table)
		waitLookup(t, d, "link.example", "encrypt", "start")
		writeFile(t, target, "outbound:\n  link.example: verify\n")
		waitLookup(t, d, "link.example", "verify", "target saved in place")
	})
	t.Run("table directory link, target replaced", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		policy := filepath.Join(dir, "srv", "git", "mail-policy")
		mkdir(t, policy)
		writeFile(t, filepath.Join(policy, "t.yaml"), "outbound:\n  link.example: encrypt\n")
		link := filepath.Join(dir, "etc", "table")
		symlink(t, policy, link)
		d := harness.StartDaemon(t, bin, link)
		waitLookup(t, d, "link.example", "encrypt", "start")
		next := policy + ".new"
		mkdir(t, next)
		writeFile(t, filepath.Join(next, "t.yaml"), "outbound:\n  link.example: verify\n")
		if err := os.Rename(policy, policy+".old"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, policy); err != nil {
			t.Fatal(err)
		}
		waitLookup(t, d, "link.example", "verify", "target directory replaced by rename")
		replaceFile(t, filepath.Join(policy, "t.yaml"), "outbound:\n  link.example: secure\n")
		waitLookup(t, d, "link.example", "secure", "file of the new target replaced")
	})
}

// TestTableMemoryBound: the 64 MiB file cap did not bound memory: 16 MB
// of "outbound: [a,a,a,…]" took the daemon to 1.7 GB. A load now decodes
// at most a bounded number of YAML nodes; the daemon's peak RSS for the
// largest such file it decodes and for the 16 MB file it refuses unread
// are printed (go test -v) and bounded.
func TestTableMemoryBound(t *testing.T) {
	dir := t.TempDir()
	serve := func(path string) (int, string, int64) {
		// Decoding 3,000,000 nodes takes 3 s of CPU; on 2 cores shared
		// by dozens of processes that was 45 s of wall time.
		return runBinaryRSS(t, 3*time.Minute, "serve", "--table", path, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
			"--event-log", "", "--probe-cache", "", "--resolver", harness.NoResolver)
	}
	for _, tc := range []struct {
		name     string
		commas   int
		want     string
		rssBelow int64
	}{
		// nodeBound of "outbound: [a,…]\n" with n commas is 2(n+3)+2: the
		// largest list a load decodes (6,000,000) is ≈ 3,000,000 nodes.
		{"largest decoded", 2_999_990, "outbound: want a mapping of keys to policies", 1 << 30},
		{"16 MB", 8_000_000, "table too large", 200 << 20},
	} {
		path := filepath.Join(dir, tc.name+".yaml")
		writeFile(t, path, "outbound: ["+strings.Repeat("a,", tc.commas)+"a]\n")
		code, out, rss := serve(path)
		t.Logf("%s: %.1f MB file of [a,a,…]: daemon peak RSS %d MiB", tc.name, float64(2*tc.commas+14)/1e6, rss>>20)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output:\n%.2000s\nwant exit 1 and %q", tc.name, code, out, tc.want)
		}
		if rss > tc.rssBelow {
			t.Errorf("%s: peak RSS %d MB, want under %d MB", tc.name, rss>>20, tc.rssBelow>>20)
		}
	}
}

// TestEmptyTableKeepsServing: a table file truncated to nothing used to
// be swapped in (every answer gone). The daemon keeps the old table and
// raises a reload_failed event saying why; allow_empty lets it load.
func TestEmptyTableKeepsServing(t *testing.T) {
	httpAddr := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	path := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, path, "outbound:\n  empty.example: encrypt\n")
	d := harness.StartDaemon(t, daemonBinary(t), path, "--http", httpAddr)
	n := len(d.Stderr())
	writeFile(t, path, "")
	waitLog(t, d, n, "the new table is empty", "table truncated")
	if got := lookup(t, d, "empty.example"); got != "encrypt" {
		t.Errorf("empty.example answers %q after the truncation, want the old table's encrypt", got)
	}
	resp, err := http.Get("http://" + httpAddr + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "reload_failed") || !strings.Contains(string(body), "the new table is empty") {
		t.Errorf("/api/events has no reload_failed event for the empty table: %s", body)
	}
	writeFile(t, path, "defaults:\n  allow_empty: true\n")
	waitLookup(t, d, "empty.example", "", "allow_empty")
}
