package policyd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// memConn is a net.Conn whose every Read returns one whole request, n
// times, then io.EOF, and which discards what is written: a client that
// waits for each reply before sending the next request, with no system
// call and no scheduler in the way. Its deadlines are no-ops.
type memConn struct {
	req    []byte
	n      int
	closed chan struct{}
	once   sync.Once
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	c.n--
	return copy(p, c.req), nil
}

func (c *memConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c      net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.c; c != nil {
		l.c = nil
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return memAddr{} }

// BenchmarkServeLoop measures the server's own work per request (reading
// and decoding a recorded Postfix request, the Handler call under its
// timeout, writing the reply) on an in-memory connection: what the server
// adds to the system calls.
func BenchmarkServeLoop(b *testing.B) { serveLoop(b, nil) }

// BenchmarkServeLoopObserve is BenchmarkServeLoop with an Observe hook
// (Server.Observe): the difference is what reporting a reply costs.
func BenchmarkServeLoopObserve(b *testing.B) {
	var n int
	serveLoop(b, func(_ *Request, a Action, failed bool, _ time.Duration) {
		if a == "DUNNO" && !failed {
			n++
		}
	})
	if n != b.N {
		b.Fatalf("observed %d DUNNO replies, want %d", n, b.N)
	}
}

// serveLoop runs BenchmarkServeLoop with the Observe hook given.
func serveLoop(b *testing.B, observe func(*Request, Action, bool, time.Duration)) {
	conn := &memConn{req: fixture(b, "postfix37-rcpt-tls13.txt"), n: b.N, closed: make(chan struct{})}
	l := &oneConnListener{c: conn, closed: make(chan struct{})}
	s := &Server{Handler: HandlerFunc(dunno), Observe: observe, Logger: slog.New(slog.DiscardHandler)}
	b.ReportAllocs()
	b.ResetTimer()
	go func() { _ = s.Serve(l) }()
	<-conn.closed
	b.StopTimer()
	if err := s.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
}
