package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// TestMain lets the test binary act as the daemon: with
// TLSPOLICYD_RUN_MAIN=1 it runs the CLI instead of the tests, so a test
// can exec it with inherited sockets as systemd would.
//
// Neither reads the system's config file: an installed package's
// (sources.cache: /var/lib/tlspolicyd/sources.json, …) overrode the
// defaults the tests assert.
func TestMain(m *testing.M) {
	defaultConfigPath = "/nonexistent/tlspolicyd-test/tlspolicyd.yaml"
	if os.Getenv("TLSPOLICYD_RUN_MAIN") == "1" {
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSystemdSocketActivation hands the daemon two listening sockets by the
// LISTEN_FDS protocol (sd_listen_fds(3)): fds 3 and 4, LISTEN_PID set to the
// daemon's own pid, LISTEN_FDNAMES naming them. The daemon must serve on
// them (not on the configured addresses), and stop cleanly on SIGTERM.
func TestSystemdSocketActivation(t *testing.T) {
	var files []*os.File
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close() // the duplicate in f keeps the socket listening
		files = append(files, f)
	}
	// LISTEN_PID must be the daemon's pid: the shell exports its own pid
	// and then execs the daemon, which keeps it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`,
		os.Args[0], "serve", "--table", "testdata/table",
		"--socketmap", "127.0.0.1:1", "--policyd", "127.0.0.1:1", "--http", "",
		"--probe-cache", "", "--event-log", "", "--resolver", "127.0.0.1:1")
	cmd.Env = append(os.Environ(), "TLSPOLICYD_RUN_MAIN=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=socketmap:policyd")
	cmd.ExtraFiles = files
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", stderr.String())
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cl *socketmap.Client
	var err error
	for {
		// The socket accepts before the daemon serves: the first
		// lookup's timeout covers the daemon's start (over 1 s in a
		// race build on a loaded machine).
		if cl, err = socketmap.Dial(ctx, addrs[0], 5*time.Second); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("socketmap on the activated socket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer cl.Close()
	r, err := cl.Lookup(ctx, "tls_policy", "bank.example")
	if err != nil || r.Status != socketmap.StatusOK || !strings.HasPrefix(r.Data, "secure") {
		t.Fatalf("lookup over activated socket = %+v, %v", r, err)
	}

	c, err := net.DialTimeout("tcp", addrs[1], 2*time.Second)
	if err != nil {
		t.Fatalf("policyd on the activated socket: %v", err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@bank.example\nrecipient=b@ourcorp.example\nclient_address=192.0.2.1\nencryption_protocol=\n\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "action=450 4.7.10 ") {
		t.Fatalf("policy reply = %q, %v", line, err)
	}
	// Log lines are written in batches (internal/logbuf): wait for it.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "using socket from systemd"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("daemon did not log the activated sockets within 5 s")
			break
		}
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop within 15 s of SIGTERM")
	}
}

// syncBuffer is a bytes.Buffer safe for the exec package's copying
// goroutine to write while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
