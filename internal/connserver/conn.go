package connserver

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
)

// lingerTimeout is how long a connection closed after an error answer
// keeps reading (and discarding) what the client still sends. Closing a
// socket with unread input makes the kernel send a RST, which can destroy
// the answer before the client has read it.
const (
	lingerTimeout  = 500 * time.Millisecond
	maxLingerBytes = 256 << 10
)

// Buffer sizes. Postfix's requests and answers are a few dozen bytes
// (socketmap) to a few hundred (policy).
const (
	ReadBufSize = 4096
	// outFlushSize is how much of pipelined answers is kept before
	// writing them out.
	outFlushSize = 4096
	// maxOutKeep is the largest output buffer kept once written: a large
	// answer grows it.
	maxOutKeep = 64 << 10
)

// Connection phases, kept in the low two bits of conn.state; the bits
// above count phase changes (each request, and each start of one after
// idling), so that a compare-and-swap by a late watchdog or by MaxConns
// eviction cannot hit a later phase (no ABA).
const (
	phaseIdle    = iota // waiting for the first byte of a request
	phaseActive         // reading a request or writing an answer
	phaseHandler        // inside Session.Call
	phaseClosed         // closed by Shutdown, MaxConns or the watchdog
	phaseMask    = 3
)

// stateOf builds a conn.state value.
func stateOf(seq, phase uint64) uint64 { return seq<<2 | phase }

// conn is one client connection. Its fields are used by its own goroutine
// only, except state (shared with Shutdown, MaxConns and the watchdog),
// since, deadline and cur, and out, which the watchdog takes over when it
// wins the state.
type conn struct {
	s      *Server
	slot   *listenerSlot // the listener's connection count, under s.mu
	hung   bool          // answered by the watchdog, Call still running; under s.mu
	nc     net.Conn
	raw    syscall.RawConn // nc's, for raw mode (rawio.go); nil if nc has none
	remote string
	in     source // what r reads from
	r      *bufio.Reader
	sess   Session
	out    []byte // answers not written yet
	log    *slog.Logger

	readTimeout, idleTimeout, requestTimeout time.Duration
	idleSlack                                time.Duration

	// Current deadlines, since mono's base, owned by whoever owns the
	// connection (see setIdleDeadline).
	rdl, wdl time.Duration
	rdlIdle  bool // rdl is an idle deadline
	partial  bool // a request has begun to arrive; rdl is its ReadTimeout

	// now is the conn goroutine's latest clock reading: when the current
	// request arrived (or, if it arrived in pieces, was complete), then
	// when its Call returned. Everything else the request needs a time
	// for (phase starts, deadlines) uses it instead of reading the clock.
	now time.Duration

	state    atomic.Uint64
	seq      uint64                         // phase changes; owned by the conn goroutine
	since    atomic.Int64                   // when the current idle or active phase began
	deadline atomic.Int64                   // watchdog deadline of the running Call
	watchdog *time.Timer                    // runs fire; see armWatchdog
	wdArmed  atomic.Bool                    // watchdog is pending: whoever sets it may Reset it
	cur      atomic.Pointer[requestContext] // context of the running Call
	linger   bool                           // close with lingerClose: an error answer was sent

	// answering is held by the watchdog from before it takes the
	// connection over until it has answered, so that the conn goroutine,
	// seeing it has been taken over, can wait for that before closing.
	answering sync.Mutex

	closeOnce sync.Once
}

func (s *Server) newConn(nc net.Conn, slot *listenerSlot) *conn {
	c := &conn{
		s:              s,
		slot:           slot,
		nc:             nc,
		raw:            rawConnOf(nc),
		remote:         remoteName(nc),
		in:             source{nc: nc, fd: -1},
		out:            make([]byte, 0, outFlushSize),
		log:            s.Logger,
		readTimeout:    s.ReadTimeout,
		idleTimeout:    s.IdleTimeout,
		requestTimeout: s.RequestTimeout,
	}
	c.r = bufio.NewReaderSize(&c.in, ReadBufSize)
	c.sess = s.NewSession(c.r, c.remote)
	c.idleSlack = min(c.idleTimeout/8, time.Second)
	c.now = mono.Now()
	c.since.Store(int64(c.now))
	c.state.Store(phaseActive)
	c.watchdog = time.AfterFunc(c.requestTimeout, c.fire)
	c.watchdog.Stop() // armed by the first Call
	return c
}

// remoteName names the client in logs: its address, or for a Unix socket,
// whose clients are unnamed ("" or "@"), "unix:" and the socket's path.
func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.Network() != "unix" && a.String() != "" {
		return a.String()
	}
	if a := nc.LocalAddr(); a != nil {
		return "unix:" + a.String()
	}
	return "unix"
}

// close closes the connection. Once it is served, only its own goroutine
// closes it; others call kill.
func (c *conn) close() {
	c.closeOnce.Do(func() { c.nc.Close() })
}

// closeIfIdle ends c if it is waiting for a request.
func (c *conn) closeIfIdle() {
	st := c.state.Load()
	if st&phaseMask == phaseIdle && c.state.CompareAndSwap(st, st|phaseClosed) {
		c.kill()
	}
}

// lingerClose half-closes c, drains what the client still sends for a
// moment, then closes: see lingerTimeout.
func (c *conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c.nc, maxLingerBytes)
	}
	c.close()
}

// outcome is how conn.loop ended.
type outcome int

const (
	done       outcome = iota // the connection is over
	handedOver                // the watchdog or MaxConns has taken the connection over
	next                      // (conn.request) the request is answered: go on
	// Raw mode only (see rawio.go):
	waitInput    // the socket has nothing more to read
	writeBlocked // the socket did not take all answers at once
	readBlocked  // a request is larger than the read buffer, or reading it failed
)

// serve reads requests and writes answers until the client closes the
// connection, an error occurs, or the server shuts down.
func (c *conn) serve() {
	takenOver := false
	defer func() {
		c.watchdog.Stop()
		switch {
		case takenOver || c.linger:
			// The watchdog has answered (or MaxConns closed c),
			// or an error answer was sent: what is left is
			// closing the socket.
			c.lingerClose()
		default:
			if len(c.out) > 0 && c.state.Load()&phaseMask != phaseClosed {
				_ = c.flush(mono.Now())
			}
			c.close()
		}
		c.s.untrack(c)
	}()
	c.log.Debug(c.s.Name+": connection opened", "remote", c.remote)
	for {
		var o outcome
		if c.raw != nil {
			o = c.serveRaw()
		} else {
			o = c.loop()
		}
		switch o {
		case writeBlocked:
			if err := c.flush(mono.Now()); err != nil {
				c.log.Debug(c.s.Name+": write failed", "remote", c.remote, "err", err)
				return
			}
			if c.s.shutdown.Load() {
				return
			}
		case readBlocked:
			o = c.request()
		}
		switch o {
		case done:
			return
		case handedOver:
			takenOver = true
			return
		}
	}
}

// loop reads requests and answers them until the connection is over.
// Answers are buffered and written when no further complete request is
// buffered: pipelined requests get their answers in one write, while a
// client that waits for each answer (Postfix) gets it at once, and so does
// one whose next request is still arriving.
//
// In raw mode (inside raw.Read, c.in.fd set) loop never blocks: it returns
// waitInput when the socket has nothing more to read, and writeBlocked or
// readBlocked for serve to do that part outside raw.Read.
func (c *conn) loop() outcome {
	raw := c.in.fd >= 0
	for {
		if c.r.Buffered() == 0 {
			// No request has begun: write the answers, then wait
			// for one.
			if o := c.writeOut(); o != next {
				return o
			}
			if !c.waitIdle() {
				return done
			}
			if raw && c.in.drained {
				return waitInput
			}
			if _, err := c.r.Peek(1); err == errWouldBlock {
				return waitInput
			} else if err != nil {
				c.readFailed(err, true)
				return done
			}
			// since first, so that whoever sees the new phase sees
			// its start time.
			c.now = mono.Now()
			c.since.Store(int64(c.now))
			if !c.state.CompareAndSwap(stateOf(c.seq, phaseIdle), stateOf(c.seq+1, phaseActive)) {
				return done // closed by Shutdown or MaxConns
			}
			c.seq++
		}
		if !c.sess.Complete() {
			// The rest of the request is still on its way: the
			// answers to those before it go out first.
			if o := c.writeOut(); o != next {
				return o
			}
			if !c.partial {
				c.setRequestDeadline(c.now)
				c.partial = true
			}
			if raw {
				_, err := c.r.Peek(c.r.Buffered() + 1)
				switch {
				case err == nil:
					continue // more of it has arrived
				case err == errWouldBlock:
					return waitInput
				case errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF):
					// Larger than the buffer, or cut short:
					// Read reads the rest, or says what is
					// wrong.
					return readBlocked
				}
				c.readFailed(err, false)
				return done
			}
		}
		if o := c.request(); o != next {
			return o
		}
	}
}

// waitIdle marks c idle, waiting for a request, unless the server is
// shutting down (then it returns false), and arms the idle timeout.
func (c *conn) waitIdle() bool {
	// In raw mode loop comes back here after each wait for input.
	if st := c.state.Load(); st&phaseMask == phaseActive {
		c.since.Store(int64(c.now))
		c.state.Store(stateOf(c.seq, phaseIdle))
	}
	if c.s.shutdown.Load() {
		return false
	}
	c.setIdleDeadline(c.now)
	return true
}

// request reads the request that has begun to arrive, answers it, and
// returns next to go on, or how the connection ends.
func (c *conn) request() outcome {
	err := c.sess.Read()
	if c.partial {
		c.partial = false
		// The Call's time starts now that the request is complete.
		c.now = mono.Now()
		// Its ReadTimeout is of no use any more, and would make a
		// raw.Read started after it fail (see serveRaw).
		c.setIdleDeadline(c.now)
	}
	if err != nil {
		c.readFailed(err, false)
		return done
	}
	if !c.handle() {
		// The watchdog has answered and serve is to close the
		// connection, or MaxConns has closed it.
		return handedOver
	}
	if c.s.shutdown.Load() || len(c.out) >= outFlushSize {
		if o := c.writeOut(); o != next {
			return o
		}
		if c.s.shutdown.Load() {
			return done
		}
	}
	return next
}

// readFailed handles a read error; idle says no request had started.
func (c *conn) readFailed(err error, idle bool) {
	if c.state.Load()&phaseMask == phaseClosed {
		return // closed by Shutdown or MaxConns
	}
	switch {
	case errors.Is(err, io.EOF):
		// The client closed between requests (Exim closes after one).
	case errors.Is(err, net.ErrClosed):
		// Closed by Shutdown.
	case errors.Is(err, os.ErrDeadlineExceeded) && idle:
		c.log.Debug(c.s.Name+": closing idle connection", "remote", c.remote, "idle_timeout", c.idleTimeout)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn(c.s.Name+": request not complete within read timeout; closing connection",
			"remote", c.remote, "read_timeout", c.readTimeout)
	default:
		// Malformed (the stream cannot be resynchronised), or the
		// connection failed: answer if the protocol has an answer, and
		// close.
		if c.out = c.sess.Malformed(c.out, err); len(c.out) > 0 {
			c.linger = c.flush(mono.Now()) == nil
		}
	}
}
