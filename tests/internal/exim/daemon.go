package exim

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Daemon is a running exim -bdf listening on 127.0.0.1.
type Daemon struct {
	// Addr is the SMTP listening address (127.0.0.1:port).
	Addr string

	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// StartDaemon runs exim -bdf -oX port (foreground daemon; the configuration
// must set local_interfaces = 127.0.0.1) with defines, waits until it
// accepts connections and stops it in t.Cleanup (SIGTERM, then SIGKILL).
func (x *Instance) StartDaemon(t testing.TB, defines map[string]string, port int) *Daemon {
	t.Helper()
	cmd := x.command(context.Background(), defines, "-bdf", "-oX", strconv.Itoa(port))
	d := &Daemon{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start exim -bdf: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("exim -bdf output:\n%s\nmainlog:\n%s\npaniclog:\n%s", d.out.String(),
				readFile(filepath.Join(x.Dir, "log", "mainlog")), readFile(filepath.Join(x.Dir, "log", "paniclog")))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-d.exited:
			t.Fatalf("exim -bdf exited at start: %s\npaniclog: %s", d.out.String(), readFile(filepath.Join(x.Dir, "log", "paniclog")))
		default:
		}
		c, err := net.DialTimeout("tcp", d.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("exim -bdf not listening on %s after 10 s: %s", d.Addr, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MainLog returns the instance's main log so far.
func (x *Instance) MainLog() string { return readFile(filepath.Join(x.Dir, "log", "mainlog")) }

// PanicLog returns the instance's panic log (usually absent: "(open …)").
func (x *Instance) PanicLog() string { return readFile(filepath.Join(x.Dir, "log", "paniclog")) }

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
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
