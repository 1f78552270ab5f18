package listen

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")

	l, err := Listen("unix:"+sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode = %v, %v", fi.Mode(), err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	l.Close()

	// A stale socket (left by a crash) is replaced.
	if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stale, _ := net.Listen("unix", sock)
	if ul, ok := stale.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	stale.Close()
	l, err = Listen("unix:"+sock, 0)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live socket (a running daemon's) is not taken over: the second
	// Listen fails and the first keeps its path.
	if _, err := Listen("unix:"+sock, 0); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen on a live socket: %v, want an 'in use' error", err)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("the first listener lost its path: %v", err)
	} else {
		c.Close()
	}
	l.Close()

	for _, tt := range []struct{ addr, err string }{
		{"unix:" + filepath.Join(dir, "plain"), "not a socket"},
		{"unix:", "empty socket path"},
		{"127.0.0.1", "want host:port"},
	} {
		if _, err := Listen(tt.addr, 0); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Listen(%q) = %v, want %q", tt.addr, err, tt.err)
		}
	}
	l, err = Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
