package tests

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestServeRefusesInvalidTableAtStart: a table with an error, or none at
// all, stops `serve` at start with exit status 1 and the error's
// file:line, before any listener opens (README: "at start the daemon exits
// 1").
func TestServeRefusesInvalidTableAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, table, want string
	}{
		{"YAML syntax error", "outbound:\n  bank.example: [unclosed\n", "table.yaml:2"},
		{"unknown level", "outbound:\n  bank.example: encrypt\n  lawfirm.example: bogus\n", "table.yaml:3:"},
		{"unknown field", "outbound:\n  bank.example: encrypt\ninbund: []\n", "table.yaml:3:"},
		{"missing file", "", "missing.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing.yaml")
			if tc.table != "" {
				path = filepath.Join(t.TempDir(), "table.yaml")
				writeFile(t, path, tc.table)
			}
			addr := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
			code, out := runBinary(t, "serve", "--config", harness.EmptyConfig(t), "--table", path, "--socketmap", addr, "--policyd", "", "--http", "",
				"--event-log", "", "--probe-cache", "", "--resolver", harness.NoResolver)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, tc.want)
			}
			if strings.Contains(out, "msg=listening") {
				t.Errorf("a listener opened before the table was refused:\n%s", out)
			}
		})
	}
}

// TestSIGHUPAppliesChange: SIGHUP loads a valid edit the watcher cannot
// see. The table file is edited in place through a hard link in another
// directory: inotify reports a write to the directory it was made in, so
// the table's directory watch gets no event, and only the signal makes
// the daemon read the file again.
func TestSIGHUPAppliesChange(t *testing.T) {
	t.Parallel()
	d, path := startDaemon(t, "outbound:\n  hup.example: encrypt\n", false)
	if got := lookup(t, d, "hup.example"); got != "encrypt" {
		t.Fatalf("initial answer %q, want encrypt", got)
	}
	link := filepath.Join(t.TempDir(), "elsewhere.yaml")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	writeFile(t, link, "outbound:\n  hup.example: verify\n  new.example: secure\n")
	n := len(d.Stderr())
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, n, "SIGHUP: reloading policy table", "SIGHUP")
	waitLog(t, d, n, `msg="policy table loaded"`, "SIGHUP")
	for key, want := range map[string]string{"hup.example": "verify", "new.example": "secure"} {
		if got := lookup(t, d, key); got != want {
			t.Errorf("after SIGHUP: %s answers %q, want %q", key, got, want)
		}
	}
}

// TestAcceptBackoffOnEMFILE runs the daemon with 48 file descriptors and
// opens more connections than it can accept: accept fails with EMFILE,
// and the daemon backs off (a handful of "accept failed" lines and little
// CPU over 1.5 s, where a loop retrying at once would log thousands and
// burn a core), keeps answering the connections it has, and accepts again
// once descriptors are free.
func TestAcceptBackoffOnEMFILE(t *testing.T) {
	t.Parallel()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		e2e.Skipf(t, "prlimit (util-linux) not installed")
	}
	wrapper := filepath.Join(t.TempDir(), "tlspolicyd-48fds")
	writeFile(t, wrapper, "#!/bin/sh\nexec "+prlimit+" --nofile=48:48 -- "+daemonBinary(t)+" \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(t.TempDir(), "table.yaml")
	writeFile(t, table, "outbound:\n  bank.example: encrypt\n")
	d := harness.StartDaemon(t, wrapper, table)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := socketmap.Dial(ctx, d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ask := func(c *socketmap.Client, what string) {
		t.Helper()
		r, err := c.Lookup(ctx, "tls_policy", "bank.example")
		if err != nil || r.Status != socketmap.StatusOK || r.Data != "encrypt" {
			t.Fatalf("%s: %v, %v; want OK encrypt", what, r, err)
		}
	}
	ask(first, "before the flood")
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			_ = c.Close()
		}
	}()
	for range 80 { // the kernel completes the handshakes; the daemon cannot accept them all
		c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flood connection: %v", err)
		}
		flood = append(flood, c)
	}
	const backoffLine = "accept failed; retrying"
	if !harness.WaitFor(ctx, 10*time.Second, func() bool { return strings.Contains(d.Stderr(), backoffLine) }) {
		t.Fatalf("the daemon never logged %q with 80 connections and 48 descriptors", backoffLine)
	}
	lines0, cpu0 := strings.Count(d.Stderr(), backoffLine), cpuTime(t, d.PID())
	time.Sleep(1500 * time.Millisecond) // a measurement window, not a wait for an event
	lines, cpu := strings.Count(d.Stderr(), backoffLine)-lines0, cpuTime(t, d.PID())-cpu0
	t.Logf("over 1.5 s at EMFILE: %d accept retries logged, %v CPU", lines, cpu)
	if lines > 15 || cpu > 500*time.Millisecond {
		t.Errorf("over 1.5 s at EMFILE: %d accept retries, %v CPU; want a back-off (at most ~10 retries, little CPU)", lines, cpu)
	}
	ask(first, "an accepted connection during EMFILE")
	if !strings.Contains(d.Stderr(), "too many open files") {
		t.Errorf("the retries do not say why (EMFILE, too many open files)")
	}

	for _, c := range flood {
		_ = c.Close()
	}
	flood = nil
	// Backed off for at most a second, the daemon accepts again.
	var again *socketmap.Client
	if !harness.WaitFor(ctx, 10*time.Second, func() bool {
		c, err := socketmap.Dial(ctx, d.Addr, time.Second)
		if err != nil {
			return false
		}
		if r, err := c.Lookup(ctx, "tls_policy", "bank.example"); err != nil || r.Data != "encrypt" {
			_ = c.Close()
			return false
		}
		again = c
		return true
	}) {
		t.Fatal("no new connection answered after the flood ended")
	}
	_ = again.Close()
	if !d.Alive() {
		t.Fatal("the daemon exited")
	}
}

// cpuTime returns the user plus system CPU time of process pid so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which ends with ")"): state is the
	// 3rd field, utime and stime the 14th and 15th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // clock ticks (USER_HZ = 100 on Linux)
}
