package policyd

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/rawsys"
)

// Raw mode: how a TCP or Unix connection gets by with one read and one
// write system call per request.
//
// Reading from a net.Conn costs two reads per request for a client that
// waits for each reply, as Postfix does: once the reply is written, the
// next Read finds nothing yet (EAGAIN), parks until the runtime's poller
// reports the socket readable, and reads again. Each Read starts by
// forgetting what the poller has reported so far, so it must try the read
// before it may wait. A system call costs 3–5 µs on a virtual machine.
//
// So conn.serveRaw runs the request loop inside one syscall.RawConn.Read,
// which forgets the poller's reports only once, on entry: the loop
// (rawLoop) reads the socket itself (source.Read), answers every complete
// request it got, writes the replies, and, if its last read left nothing
// in the socket, returns false to wait for the poller without reading
// again. Data that arrives after that last read makes the poller report
// the socket readable, and raw.Read calls the loop again; nothing is
// missed.
//
// Except the end of the stream: a read that returns less than asked for
// has taken all the data, but a FIN that came with it is seen only by the
// next read, and the poller, which reported data and FIN at once, reports
// nothing more. Exim half-closes right after its one request and waits
// for the server to close, so a connection trusts a short read only from
// its second request on (source.trustShort): before, it reads until
// EAGAIN or EOF. A later request followed at once by a half-close (no
// known client does that) is noticed finCheck after the reply: a wait
// that follows a trusted short read has that deadline, and when it passes
// with nothing read, the loop reads once more to know.
//
// What the loop cannot do without blocking it hands back to conn.serve,
// outside raw.Read: writing replies the socket does not take at once
// (needWrite), and reading a request larger than the read buffer, or the
// end of a stream that stops inside a request (needRead). And as the
// Handler runs inside raw.Read, which holds the connection's read lock,
// Close from another goroutine would wait for the Handler to return:
// other goroutines end a connection with conn.kill (a shutdown(2), which
// wakes the loop with EOF) and leave closing it to its own goroutine.
//
// Measured with tlspolicyd-bench, policy requests at 32 connections, daemon
// CPU profile: reading took 5.1 µs per request before, 1.4 µs with raw
// mode (of about 30 µs in all).
//
// The loop's reads and writes are raw system calls (internal/rawsys),
// which spare the runtime's scheduler work it would do for a call that
// might block: the socket is non-blocking.

// finCheck is how long after a trusted short read the connection reads
// again in case a FIN came with the data (see Raw mode above). Waits of a
// busy connection end sooner; an idle one reads once more after finCheck,
// then waits with IdleTimeout.
const finCheck = time.Second

// errWouldBlock is what source.Read and conn.writeRaw return when the
// socket has nothing to read or no room to write.
var errWouldBlock = errors.New("policyd: operation would block")

// rawConnOf returns nc's syscall.RawConn if nc is a TCP or Unix
// connection, whose Read and Write are the plain system calls raw mode
// makes instead; nil otherwise (then the server reads and writes through
// nc).
func rawConnOf(nc net.Conn) syscall.RawConn {
	var rc syscall.RawConn
	var err error
	switch nc := nc.(type) {
	case *net.TCPConn:
		rc, err = nc.SyscallConn()
	case *net.UnixConn:
		rc, err = nc.SyscallConn()
	}
	if err != nil {
		return nil
	}
	return rc
}

// source is what a conn's bufio.Reader reads from: the net.Conn, or, while
// the conn's goroutine runs inside raw.Read (fd >= 0), the socket itself,
// without blocking.
type source struct {
	nc      net.Conn
	fd      int  // the socket while inside raw.Read, else -1
	drained bool // the last read from fd left nothing in the socket
	// unsure: drained was concluded from a short read, after which a FIN
	// may wait unseen; trustShort: short reads count as drained at all.
	unsure, trustShort bool
}

// Read reads from nc, or from fd without blocking, returning errWouldBlock
// if fd has nothing to read.
func (s *source) Read(p []byte) (int, error) {
	if s.fd < 0 {
		return s.nc.Read(p)
	}
	n, err := rawsys.Read(s.fd, p)
	switch {
	case err == syscall.EAGAIN:
		s.drained, s.unsure = true, false
		return 0, errWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	// A stream socket's read returns less than asked for only when it
	// has handed over all the data it had (see Raw mode about a FIN).
	s.drained = n < len(p) && s.trustShort
	s.unsure = s.drained
	return n, nil
}

// writeRaw writes c.out to the socket without blocking. It returns
// errWouldBlock, with what is left in c.out, if the socket does not take
// it all.
func (c *conn) writeRaw() error {
	for len(c.out) > 0 {
		n, err := rawsys.Write(c.src.fd, c.out)
		switch {
		case err == syscall.EAGAIN || err == nil && n <= 0:
			return errWouldBlock
		case err != nil:
			return os.NewSyscallError("write", err)
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	return nil
}

// serveRaw runs rawLoop inside c.raw.Read (see Raw mode above) until the
// loop returns something other than waitInput. It starts with the
// connection idle.
func (c *conn) serveRaw() outcome {
	// raw.Read fails at once if the read deadline has passed, and the
	// one in place may be that of a request long answered.
	if c.br.Buffered() == 0 {
		c.armRead(c.idleTimeout)
	} else {
		c.armRead(c.readTimeout) // a part of the next request came with the last
	}
	o := goOn
	c.finCheck = false
	err := c.raw.Read(func(fd uintptr) bool {
		c.src.fd, c.src.drained = int(fd), false
		o = c.rawLoop()
		c.src.fd = -1
		return o != waitInput
	})
	var ne net.Error
	if err != nil && c.finCheck && errors.As(err, &ne) && ne.Timeout() && c.state.Load()&phaseMask == phaseIdle {
		return goOn // finCheck passed: read again (see Raw mode above)
	}
	if err != nil {
		// Waiting for input failed: the read deadline passed, or the
		// connection was closed.
		if ph := c.state.Load() & phaseMask; c.br.Buffered() == 0 && (ph == phaseIdle || ph == phaseClosed) {
			c.logIdleEnd(err)
		} else {
			c.log.Warn("policyd: reading request failed; closing connection", "remote", c.remote, "err", err)
		}
		return done
	}
	return o
}

// rawLoop answers the complete requests that can be read from the socket
// without blocking, writes the replies, and returns waitInput when it
// needs the socket to become readable; see Raw mode above.
func (c *conn) rawLoop() outcome {
	for {
		if c.br.Buffered() > 0 && c.state.Load()&phaseMask == phaseIdle {
			c.now = monoNow() // the first bytes of a request
			if !c.begin() {
				return done
			}
		}
		for c.requestBuffered() {
			if o := c.answer(); o != goOn {
				return o
			}
		}
		if len(c.out) > 0 {
			switch err := c.writeRaw(); {
			case errors.Is(err, errWouldBlock):
				return needWrite
			case err != nil:
				c.log.Debug("policyd: write failed; closing connection", "remote", c.remote, "err", err)
				return done
			}
			if o := c.replied(); o != goOn {
				return o
			}
			continue // a part of the next request may be in the buffer
		}
		// More input is needed.
		busy := c.br.Buffered() > 0
		if c.src.drained {
			// The last read took all the socket had: wait for the
			// poller rather than read again, which would fail.
			c.finCheck = !busy && c.src.unsure
			switch {
			case busy:
				c.waited = true
				c.armRead(c.readTimeout) // from the request's first byte
			case c.finCheck:
				c.armRead(finCheck) // from the last reply
			default:
				c.armRead(c.idleTimeout) // from the last reply
			}
			return waitInput
		}
		if c.br.Buffered() == c.br.Size() {
			return needRead // a request larger than the buffer
		}
		switch _, err := c.br.Peek(c.br.Buffered() + 1); {
		case err == nil, errors.Is(err, errWouldBlock):
		case !busy:
			c.logIdleEnd(err)
			return done
		default:
			// The stream ended or failed inside a request: let Decode
			// say how.
			c.waited = true
			return needRead
		}
	}
}

// kill ends the connection from another goroutine than its own (Shutdown,
// MaxConns, the watchdog): a connection in raw mode is shut down rather
// than closed (see Raw mode above). Its goroutine then reads EOF, or gets
// an error writing, and closes it.
func (c *conn) kill() {
	if c.raw == nil {
		c.close()
		return
	}
	c.state.Store(phaseClosed)
	c.cancel(context.Canceled)
	_ = c.raw.Control(func(fd uintptr) {
		_ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR)
	})
}
