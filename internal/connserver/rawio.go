package connserver

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
)

// Raw mode: how a TCP connection gets by with one read and one write
// system call per request.
//
// Reading from a net.Conn costs two reads per request for a client that
// waits for each reply, as Postfix does: once the reply is written, the
// next Read finds nothing yet (EAGAIN), parks until the runtime's poller
// reports the socket readable, and reads again. Each Read starts by
// forgetting what the poller has reported so far, so it must try the read
// before it may wait, and a system call costs microseconds on a virtual
// machine.
//
// So conn.serveRaw runs the request loop inside one syscall.RawConn.Read,
// which forgets the poller's reports only once, on entry: the loop reads
// the socket itself (source.Read), answers every complete request it got,
// writes the replies, and, if its last read left nothing in the socket,
// returns false to wait for the poller without reading again. Data that
// arrives after that last read makes the poller report the socket
// readable, and raw.Read calls the loop again; nothing is missed. "Left
// nothing" is what Linux reports with TCP_INQ on each read (recvmsg):
// the bytes still queued, or 1 if the client's FIN is (a short read does
// not say that: data and FIN may have arrived, and been reported, together).
// Raw mode is therefore for TCP on Linux; elsewhere, and for Unix sockets,
// the server reads and writes through the net.Conn. (Trusting a short read
// instead, as the policy server once did, works for Unix sockets too but
// misses a FIN that came with the data: it needed a second read a second
// after each answer and a rule for Exim's first request.)
//
// The loop's reads and writes are raw system calls (internal/rawsys),
// which spare the runtime's scheduler work it would do for a call that
// might block: the socket is non-blocking. bench/README.md has what each
// of these saved.
//
// What the loop cannot do without blocking it hands back to conn.serve,
// outside raw.Read: writing replies the socket does not take at once, and
// reading a request larger than the read buffer. And as the Handler runs
// inside raw.Read, which holds the connection's read lock, Close from
// another goroutine would wait for the Handler to return: other goroutines
// end a connection with conn.kill (a shutdown(2), which wakes the loop
// with EOF) and leave closing it to its own goroutine.

// errWouldBlock is what source.Read and conn.writeRaw return when the
// socket has nothing to read or no room to write.
var errWouldBlock = errors.New("connserver: operation would block")

// source is what a conn's bufio.Reader reads from: the net.Conn, or, while
// the conn's goroutine runs inside raw.Read (fd >= 0), the socket itself,
// without blocking.
type source struct {
	nc      net.Conn
	fd      int  // the socket while inside raw.Read, else -1
	drained bool // the last read from fd left nothing in the socket
	oob     [32]byte
}

// Read reads from nc, or from fd without blocking, returning errWouldBlock
// if fd has nothing to read.
func (s *source) Read(p []byte) (int, error) {
	if s.fd < 0 {
		return s.nc.Read(p)
	}
	n, inq, err := s.recv(p)
	switch {
	case err == syscall.EAGAIN:
		s.drained = true
		return 0, errWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("recvmsg", err)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	s.drained = inq == 0
	return n, nil
}

// writeRaw writes c.out to the socket without blocking. It returns
// errWouldBlock, with what is left in c.out, if the socket does not take
// it all.
func (c *conn) writeRaw() error {
	for len(c.out) > 0 {
		n, err := write(c.in.fd, c.out)
		switch {
		case err == syscall.EAGAIN || err == nil && n <= 0:
			return errWouldBlock
		case err != nil:
			return os.NewSyscallError("write", err)
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	c.resetOut()
	return nil
}

// serveRaw runs loop inside c.raw.Read (see Raw mode above) until loop
// returns something other than waitInput.
func (c *conn) serveRaw() outcome {
	if !c.partial {
		// raw.Read fails at once if the read deadline has passed, and
		// the one in place may be that of a request long answered.
		c.setIdleDeadline(mono.Now())
	}
	o := done
	err := c.raw.Read(func(fd uintptr) bool {
		c.in.fd, c.in.drained = int(fd), false
		o = c.loop()
		c.in.fd = -1
		return o != waitInput
	})
	if err != nil {
		// Waiting for input failed: the read deadline passed.
		c.readFailed(err, c.r.Buffered() == 0)
		return done
	}
	return o
}

// kill ends the connection from another goroutine than its own (Shutdown,
// MaxConns, the watchdog). A connection in raw mode is shut down rather
// than closed (see Raw mode above): its goroutine then reads EOF, or fails
// to write, and closes it. Others are closed.
func (c *conn) kill() {
	if c.raw == nil {
		c.close()
		return
	}
	_ = c.raw.Control(shutdown)
}
