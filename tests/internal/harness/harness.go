// Package harness holds the reusable pieces of the end-to-end tests that
// drive real Postfix 3.7 (and swaks) against tlspolicyd: a throwaway Postfix
// instance (Postfix), a loopback fake MX (FakeMX), the daemon built from
// ./cmd/tlspolicyd (Daemon), a stub socketmap server for the harness's own
// checks (StubSocketmap) and a `postmap -q` runner (Postmap). For inbound
// tests: a receiving smtpd configuration (InboundMain, SmtpdListener), a
// swaks runner with a transcript parser (Swaks, SwaksSession), postcat
// (Postfix.Postcat) and a throwaway CA issuing server and client
// certificates with Postfix-style fingerprints (NewTestCA, CertFiles).
//
// Instances get their own config, queue and data directories under a temp
// dir, listen on 127.0.0.1 only, log to a maillog_file, and route every test
// domain to a loopback address through the chroot's queue/etc/hosts, so
// nothing touches the system's mail setup or a public address.
//
// Tests that need Postfix call RequirePostfix first: it skips (with the
// reason) when not running as root or when the binaries are missing, and
// fails instead where end-to-end tests are required (internal/e2e: CI).
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
)

// PostfixTools are the programs the Postfix tests run.
var PostfixTools = []string{"postfix", "postmap", "postqueue", "postconf", "postcat", "sendmail", "swaks"}

// sbinDirs are searched after $PATH: Debian puts postfix, postmap and
// sendmail in /usr/sbin, which is not on every test runner's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// LookTool finds a program on $PATH or in the sbin directories.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := d + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// RequirePostfix skips t (e2e.Skipf: fails it in CI) unless the test runs
// as root and every program in PostfixTools is installed
// (tests/install-deps.sh installs them).
func RequirePostfix(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		e2e.Skipf(t, "real-Postfix tests need root (throwaway instances run as user postfix)")
	}
	var missing []string
	for _, name := range PostfixTools {
		if _, err := LookTool(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		e2e.Skipf(t, "%s not installed (run tests/install-deps.sh)", strings.Join(missing, ", "))
	}
}

// FreePort returns a TCP port that was free on host a moment ago: it
// listens on host:0 and closes the listener. The small race with other
// processes is acceptable on a test machine.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("pick a free port on %s: %v", host, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("close port picker: %v", err)
	}
	return port
}

// WaitFor polls cond every 50 ms until it returns true or timeout passes;
// it reports whether cond became true.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
}

// Result is the outcome of a command run by Run.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status; -1 when the program did not run or was
	// killed.
	Code int
}

// String formats r for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// Run runs name (looked up with LookTool) with args and stdin, and returns
// its output and exit code. err is set only when the program could not be
// run at all or ctx ended; a non-zero exit is not an error.
func Run(ctx context.Context, stdin string, name string, args ...string) (Result, error) {
	path, err := LookTool(name)
	if err != nil {
		return Result{Code: -1}, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err = cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0 && ctx.Err() == nil:
		res.Code = exit.ExitCode()
	default:
		res.Code = -1
		return res, fmt.Errorf("run %s %s: %w", name, strings.Join(args, " "), err)
	}
	return res, nil
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
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

// itoa is strconv.Itoa, short for building addresses.
func itoa(i int) string { return strconv.Itoa(i) }
