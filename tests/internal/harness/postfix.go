package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Postfix is a throwaway Postfix instance (tests/README.md): its own config,
// queue and data directories under one temp dir, inet_interfaces = 127.0.0.1,
// a maillog_file, chrooted smtp with its own queue/etc/hosts, DNS disabled,
// local delivery discarded.
type Postfix struct {
	// Dir is the instance's root; ConfigDir holds main.cf and master.cf,
	// QueueDir is queue_directory, Maillog the maillog_file.
	Dir, ConfigDir, QueueDir, Maillog string

	t       testing.TB
	running bool
}

// NewPostfix writes the instance's files and starts it. t.Cleanup stops
// it, waits for its master process to exit and removes the directory;
// when the test failed it logs the maillog first. Call RequirePostfix
// before. The methods return errors rather than failing t, so subtests
// may use an instance created by their parent.
func NewPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	dir, err := os.MkdirTemp("", "tlspolicyd-postfix-")
	if err != nil {
		t.Fatalf("postfix instance dir: %v", err)
	}
	p := &Postfix{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		QueueDir:  filepath.Join(dir, "queue"),
		Maillog:   filepath.Join(dir, "maillog"),
		t:         t,
	}
	t.Cleanup(p.cleanup)
	if err := p.write(cfg); err != nil {
		t.Fatalf("postfix instance: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("postfix instance: %v", err)
	}
	return p
}

// AddHost maps name to ip in the chroot's hosts file. The resolver reads
// the file on every lookup, so this works on a running instance.
func (p *Postfix) AddHost(name, ip string) error {
	path := filepath.Join(p.QueueDir, "etc", "hosts")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", ip, name); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// Command runs a Postfix program with "-c ConfigDir" (sendmail takes -C)
// prepended to args. The error is set only when the program could not be
// run; check Result.Code for its exit status.
func (p *Postfix) Command(ctx context.Context, stdin, name string, args ...string) (Result, error) {
	flag := "-c"
	if name == "sendmail" {
		flag = "-C"
	}
	return Run(ctx, stdin, name, append([]string{flag, p.ConfigDir}, args...)...)
}

// command runs a Postfix program that must exit 0.
func (p *Postfix) command(ctx context.Context, stdin, name string, args ...string) (Result, error) {
	res, err := p.Command(ctx, stdin, name, args...)
	if err != nil {
		return res, fmt.Errorf("postfix instance %s: %w", p.Dir, err)
	}
	if res.Code != 0 {
		return res, fmt.Errorf("%s -c %s %s: %s", name, p.ConfigDir, strings.Join(args, " "), res)
	}
	return res, nil
}

// Start runs `postfix start`. It runs the checks of `postfix check`
// itself (postfix-script check-fatal, then check-warn) and fails when they
// find a fatal problem, so a separate `postfix check` would only cost time.
// The warnings that queue/etc/hosts, resolv.conf and nsswitch.conf differ
// from /etc are expected.
func (p *Postfix) Start(ctx context.Context) error {
	if _, err := p.command(ctx, "", "postfix", "start"); err != nil {
		return err
	}
	p.running = true
	return nil
}

// Stop runs `postfix stop` and waits (up to 10 s) for the master process
// to exit. Stopping a stopped instance does nothing.
func (p *Postfix) Stop(ctx context.Context) error {
	if !p.running {
		return nil
	}
	p.running = false
	pid := p.masterPID()
	if _, err := p.command(ctx, "", "postfix", "stop"); err != nil {
		return err
	}
	if pid > 0 && !WaitFor(ctx, 10*time.Second, func() bool {
		return syscall.Kill(pid, 0) != nil
	}) {
		return fmt.Errorf("postfix master %d still running 10 s after postfix stop", pid)
	}
	return nil
}

func (p *Postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (p *Postfix) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		p.t.Errorf("stop postfix: %v", err)
	}
	if p.t.Failed() {
		if b, err := os.ReadFile(p.Maillog); err == nil {
			p.t.Logf("maillog of %s:\n%s", p.Dir, b)
		}
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		p.t.Logf("remove postfix instance dir: %v", err)
	}
}

// Log returns the instance's maillog so far.
func (p *Postfix) Log() string {
	b, err := os.ReadFile(p.Maillog)
	if err != nil {
		return ""
	}
	return string(b)
}
