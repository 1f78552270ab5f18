// Package redistest starts throwaway redis-server (or valkey-server)
// processes on loopback for tests: one per test, its own port and
// directory, killed in t.Cleanup.
package redistest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
)

// Server is one redis-server process.
type Server struct {
	Addr string // 127.0.0.1:port
	t    testing.TB
	bin  string
	dir  string
	args []string
	cmd  *exec.Cmd
	tls  *tls.Config // set for a TLS-only server (StartTLS)
}

// Binary returns the server binary to use: $TLSPOLICYD_REDIS_SERVER, else
// redis-server on PATH. A missing binary skips t (fails it in CI).
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("TLSPOLICYD_REDIS_SERVER"); b != "" {
		return b
	}
	b, err := exec.LookPath("redis-server")
	if err != nil {
		e2e.Skipf(t, "redis-server not installed (apt-get install redis-server; tests/install-deps.sh does)")
	}
	return b
}

// Start runs bin on a free loopback port with extra config directives
// (e.g. "--requirepass", "secret").
func Start(t testing.TB, bin string, extra ...string) *Server {
	t.Helper()
	port := freePort(t)
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), t: t, bin: bin, dir: t.TempDir()}
	s.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}, extra...)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// StartTLS runs bin serving TLS only, with the certificate and key files
// given, whose name must be localhost; clients are not asked for
// certificates. roots verify it.
func StartTLS(t testing.TB, bin, certFile, keyFile string, roots *x509.CertPool, extra ...string) *Server {
	t.Helper()
	port := freePort(t)
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), t: t, bin: bin, dir: t.TempDir(),
		tls: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	s.args = append([]string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}, extra...)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dial connects as a client would, over TLS for a TLS-only server.
func (s *Server) dial() (net.Conn, error) {
	if s.tls != nil {
		return tls.DialWithDialer(&net.Dialer{Timeout: 200 * time.Millisecond}, "tcp", s.Addr, s.tls)
	}
	return net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.args...)
	logf, err := os.Create(filepath.Join(s.dir, "server.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.bin, err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := s.dial(); err == nil {
			fmt.Fprintf(c, "PING\r\n")
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line != "" {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	s.t.Fatalf("%s did not answer on %s:\n%s", s.bin, s.Addr, b)
}

// Kill SIGKILLs the server (no shutdown, no save).
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
