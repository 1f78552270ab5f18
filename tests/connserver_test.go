package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestSocketmapAnswerBeforePartialRequest: the daemon answers a complete
// socketmap request at once even when the first byte of the next request
// came with it; it used to hold the answer until the idle timeout closed
// the connection, and the answer was never sent.
func TestSocketmapAnswerBeforePartialRequest(t *testing.T) {
	d, _ := startDaemon(t, "outbound:\n  bank.example: encrypt\n", false)
	c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "23:tls_policy bank.example,2"); err != nil {
		t.Fatal(err)
	}
	const want = "10:OK encrypt,"
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("no answer within 3 s with a partial request behind it: read %q, %v", got[:n], err)
	}
	if string(got) != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
	// The rest of the next request is answered too.
	if _, err := io.WriteString(c, "3:tls_policy bank.example,"); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("second answer %q, %v; want %q", got[:n], err, want)
	}
}

// TestHTTPConnectionsLeaveLookupsServed: keep-alive connections to the
// HTTP listener cannot take the descriptors the lookup listeners need.
// The daemon runs with an open-file limit of 300 (soft) / 600 (hard) and
// max_connections 100; 1,000 HTTP clients each make a request and keep
// their connection open; then 100 socketmap clients must all be answered.
// Before the HTTP listener was bounded, it accepted until the descriptors
// ran out and socketmap's accept failed (EMFILE). The soft limit must
// have been raised to the hard one, and HTTP serves again once the
// clients leave.
func TestHTTPConnectionsLeaveLookupsServed(t *testing.T) {
	bin := daemonBinary(t)
	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	writeFile(t, table, "outbound:\n  bank.example: encrypt\n")
	smAddr := net.JoinHostPort("127.0.0.1", itoa(harness.FreePort(t, "127.0.0.1")))
	httpAddr := net.JoinHostPort("127.0.0.1", itoa(harness.FreePort(t, "127.0.0.1")))
	cmd := exec.Command("/bin/sh", "-c", `ulimit -Sn 300 && ulimit -Hn 600 && exec "$0" "$@"`,
		bin, "serve", "--table", table, "--socketmap", smAddr, "--policyd", "", "--http", httpAddr,
		"--max-connections", "100", "--probe-cache", filepath.Join(dir, "probes.json"),
		"--event-log", filepath.Join(dir, "events.jsonl"), "--resolver", harness.NoResolver)
	// One writer for both: exec writes to it from one goroutine at a time.
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait() // the output is complete once Wait returns
		if t.Failed() {
			t.Logf("daemon output:\n%s", out.String())
		}
	})
	if !harness.WaitFor(context.Background(), 15*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", httpAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatal("daemon not listening within 15 s")
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`Max open files\s+600\s+600`).Match(limits) {
		t.Errorf("soft open-file limit not raised to the hard one:\n%s", limits)
	}

	var hogs []net.Conn
	defer func() {
		for _, c := range hogs {
			c.Close()
		}
	}()
	for range 1000 {
		c, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("HTTP connection %d: %v", len(hogs)+1, err)
		}
		hogs = append(hogs, c)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: tlspolicyd\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	// Let the daemon accept what it will.
	time.Sleep(time.Second)

	for i := range 100 {
		c, err := net.DialTimeout("tcp", smAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("socketmap connection %d: %v", i+1, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "23:tls_policy bank.example,"); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("10:OK encrypt,"))
		if n, err := io.ReadFull(c, got); err != nil || string(got) != "10:OK encrypt," {
			t.Fatalf("socketmap lookup %d with 1,000 HTTP connections open: %q, %v", i+1, got[:n], err)
		}
	}

	for _, c := range hogs {
		c.Close()
	}
	hogs = nil
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("HTTP after the clients left: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz after the clients left: %s", resp.Status)
	}
}
