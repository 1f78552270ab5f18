package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ModuleRoot returns the directory holding the go.mod of the working
// directory's module (go test runs in the package directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// goTool returns the go command: $GOROOT/bin/go when go test set GOROOT
// (it does for the test binary's environment), else the one on $PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// FaultsTag is the build tag of a daemon with fault injection
// (internal/fault): its servers fail as $TLSPOLICYD_FAULTS says.
const FaultsTag = "tlspolicyd_faults"

// BuildDaemon runs `go build -o DIR/tlspolicyd ./cmd/tlspolicyd` in the
// module root and returns the binary's path; with tags, `-tags` is added
// and the binary is DIR/tlspolicyd-TAG…. The error carries the compiler's
// output.
func BuildDaemon(ctx context.Context, dir string, tags ...string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, strings.Join(append([]string{"tlspolicyd"}, tags...), "-"))
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, goTool(), append(args, "./cmd/tlspolicyd")...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/tlspolicyd: %w\n%s", err, out)
	}
	return bin, nil
}

// Daemon is a running `tlspolicyd serve` process whose socketmap server
// listens on Addr; policyd and HTTP are disabled unless extra arguments
// enable them.
type Daemon struct {
	// Addr is the socketmap listen address (127.0.0.1:port or unix:/path).
	Addr string
	// Table is the --table path (a YAML file or a directory).
	Table string

	t      testing.TB
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // exit status, valid once exited is closed
}

// NoResolver is a loopback DNS address where nothing listens: daemons in
// tests use it so that their prober never leaves the machine.
const NoResolver = "127.0.0.1:1"

// StartDaemon starts `bin serve --table table --socketmap 127.0.0.1:PORT
// --policyd "" --http "" --probe-cache TMP/probes.json` plus extra args on a
// free port and waits (up to 10 s) until the socketmap port accepts
// connections. (The probe cache would otherwise default to a system path.) t.Cleanup stops it
// with SIGTERM (SIGKILL after 5 s) and logs its stderr if the test failed.
func StartDaemon(t testing.TB, bin, table string, extra ...string) *Daemon {
	t.Helper()
	return StartDaemonEnv(t, nil, bin, table, extra...)
}

// EmptyConfig writes an empty daemon configuration file and returns its
// path, for --config: without it the daemon reads
// /etc/tlspolicyd/tlspolicyd.yaml when that exists (an installed package,
// e.g. while packaging/test-deb.sh runs), whose log, cache and source
// settings would leak into a test.
func EmptyConfig(t testing.TB) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "tlspolicyd.yaml")
	if err := os.WriteFile(conf, []byte("# tests: every setting from the command line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// StartDaemonEnv is StartDaemon with env (NAME=value) added to the
// daemon's environment, e.g. TLSPOLICYD_FAULTS for a FaultsTag build.
func StartDaemonEnv(t testing.TB, env []string, bin, table string, extra ...string) *Daemon {
	t.Helper()
	return StartDaemonAt(t, env, bin, table, net.JoinHostPort("127.0.0.1", itoa(FreePort(t, "127.0.0.1"))), extra...)
}

// StartDaemonAt is StartDaemonEnv with the socketmap listening on addr:
// host:port, or unix:/path for a unix socket (e.g. in a Postfix instance's
// queue directory, which its chrooted clients reach as private/NAME).
func StartDaemonAt(t testing.TB, env []string, bin, table, addr string, extra ...string) *Daemon {
	t.Helper()
	args := append([]string{"serve", "--config", EmptyConfig(t), "--table", table, "--socketmap", addr, "--policyd", "", "--http", "",
		"--probe-cache", filepath.Join(t.TempDir(), "probes.json"),
		"--event-log", filepath.Join(t.TempDir(), "events.jsonl"),
		// The daemon's prober must never query the machine's resolver (a
		// non-loopback address): nothing listens on 127.0.0.1:1, so every
		// probe fails at once as temporary.
		"--resolver", NoResolver}, extra...)
	d := &Daemon{Addr: addr, Table: table, t: t, stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	if len(env) > 0 {
		d.cmd.Env = append(os.Environ(), env...)
	}
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(d.stop)

	ready := WaitFor(context.Background(), 10*time.Second, func() bool {
		if !d.Alive() {
			return false
		}
		network, address := "tcp", addr
		if path, ok := strings.CutPrefix(addr, "unix:"); ok {
			network, address = "unix", path
		}
		c, err := net.DialTimeout(network, address, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	if !d.Alive() {
		t.Fatalf("tlspolicyd %s exited at start: %v\nstderr:\n%s", strings.Join(args, " "), d.err, d.Stderr())
	}
	if !ready {
		t.Fatalf("tlspolicyd socketmap %s not accepting connections after 10 s\nstderr:\n%s", addr, d.Stderr())
	}
	return d
}

// Alive reports whether the process is still running.
func (d *Daemon) Alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// PID returns the daemon's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Stderr returns everything the daemon logged so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// Signal sends sig (e.g. syscall.SIGHUP, which forces a table reload).
func (d *Daemon) Signal(sig os.Signal) error {
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal tlspolicyd: %w", err)
	}
	return nil
}

func (d *Daemon) stop() {
	if !d.Alive() {
		d.t.Errorf("tlspolicyd exited before the end of the test: %v", d.err)
	} else {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
			// systemd and operators read a non-zero status as a crash.
			if d.err != nil {
				d.t.Errorf("tlspolicyd exited with %v after SIGTERM, want status 0", d.err)
			}
		case <-time.After(5 * time.Second):
			d.t.Errorf("tlspolicyd did not exit 5 s after SIGTERM; killing it")
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.t.Failed() {
		d.t.Logf("tlspolicyd stderr:\n%s", d.Stderr())
	}
}
