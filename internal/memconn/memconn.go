// Package memconn is an in-memory connection for the protocol servers'
// benchmarks (BenchmarkServeLoop): a client that sends one whole request
// per Read and waits for each reply, with no system call and no scheduler
// in the way, so that what is measured is what the server adds.
package memconn

import (
	"io"
	"net"
	"sync"
	"time"
)

// Conn is a net.Conn whose every Read returns one whole request, n times,
// then io.EOF, and which discards what is written. Its deadlines are
// no-ops.
type Conn struct {
	req    []byte
	n      int
	closed chan struct{}
	once   sync.Once
}

// New returns a Conn that sends req n times.
func New(req []byte, n int) *Conn {
	return &Conn{req: req, n: n, closed: make(chan struct{})}
}

// Closed is closed when the server closes the Conn.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

func (c *Conn) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	c.n--
	return copy(p, c.req), nil
}

func (c *Conn) Write(p []byte) (int, error) { return len(p), nil }

func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *Conn) LocalAddr() net.Addr              { return addr{} }
func (c *Conn) RemoteAddr() net.Addr             { return addr{} }
func (c *Conn) SetDeadline(time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

type addr struct{}

func (addr) Network() string { return "mem" }
func (addr) String() string  { return "mem" }

// Listener hands out one connection, then blocks until closed.
type Listener struct {
	c      net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewListener returns a Listener handing out c.
func NewListener(c net.Conn) *Listener { return &Listener{c: c, closed: make(chan struct{})} }

func (l *Listener) Accept() (net.Conn, error) {
	if c := l.c; c != nil {
		l.c = nil
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *Listener) Addr() net.Addr { return addr{} }
