package socketmap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Server defaults.
const (
	// DefaultReadTimeout bounds the time from a request's first byte to its
	// last.
	DefaultReadTimeout = 10 * time.Second
	// DefaultIdleTimeout closes connections idle this long. Postfix keeps
	// idle socketmap connections for 100 s and more and reconnects silently
	// when the server has closed one, so this only has to be longer than
	// that to spare reconnects.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultRequestTimeout bounds one Handler call.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultSlowRequest is how long a request may take to arrive before
	// its connection may give its place to a new one at MaxConns. Postfix
	// writes a request in one write; only a slow-loris client dribbles.
	DefaultSlowRequest = time.Second
)

// lingerTimeout is how long a connection closed after an error reply keeps
// reading (and discarding) what the client still sends. Closing a socket with
// unread input makes the kernel send a RST, which can destroy the error reply
// before the client has read it.
const (
	lingerTimeout  = 500 * time.Millisecond
	maxLingerBytes = 256 << 10
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("socketmap: server closed")

// Server serves socketmap requests on persistent connections, one goroutine
// per connection, calling Handler for each lookup. The zero value plus a
// Handler is ready to use; fields must not change once Serve has been
// called.
type Server struct {
	// Handler answers lookups. Required.
	Handler Handler
	// Logger receives a debug record per request (remote, map, key,
	// status), warnings for protocol errors, handler errors and timeouts,
	// and errors for handler panics. Nil means slog.Default().
	Logger *slog.Logger

	// ReadTimeout is the deadline for reading a request once its first
	// byte has arrived (default DefaultReadTimeout). A blocked write of
	// replies fails after between half of it and all of it.
	ReadTimeout time.Duration
	// IdleTimeout closes a connection on which no request has started for
	// this long (default DefaultIdleTimeout). Deadlines are renewed lazily,
	// so the close may come up to IdleTimeout/8, at most 1 s, early.
	IdleTimeout time.Duration
	// RequestTimeout bounds each Handler call (default
	// DefaultRequestTimeout): the Handler's context expires then, and if
	// the Handler has not returned the client gets "TEMP timeout" and the
	// connection is closed.
	RequestTimeout time.Duration
	// MaxRequestSize caps a request's payload in bytes (default
	// DefaultMaxRequestSize).
	MaxRequestSize int
	// MaxConns caps the simultaneous connections accepted from each
	// listener given to Serve; 0 means no limit. A connection arriving at
	// the limit takes the place of the connection idle for longest
	// (Postfix reconnects silently when the server has closed an idle
	// connection); failing that, of the connection whose current request
	// has been in progress longest, if that is more than SlowRequest (a
	// slow-loris client: Postfix writes a request in one go); failing
	// that, the newcomer is closed at once. Nothing waits in a queue. The
	// log gets at most one line about the limit every 10 s, with counts.
	MaxConns int
	// SlowRequest is how long a request may be in progress (its first
	// byte arrived, the reply not yet written; time in the Handler does
	// not count) before its connection may be closed to make room for a
	// new one at MaxConns (default DefaultSlowRequest). ReadTimeout still
	// bounds every request when the server is not full.
	SlowRequest time.Duration
	// Observe, if set, is called once for every reply the server sends:
	// with the request's map name ("" for a request too malformed to
	// have one), the status sent (after the fail-closed rewrites: TEMP
	// for a Handler error or panic, for an overrun of RequestTimeout,
	// which the watchdog answers "TEMP timeout", and for an OK reply
	// that cannot be sent; PERM for a bad request), and the time from
	// the request's arrival to its reply (0 for a bad request). It is
	// what Postfix got, which a wrapper around the Handler cannot see.
	//
	// It runs on every request's path, on the connection's goroutine or,
	// for a timeout, on the watchdog's: it must be quick and safe for
	// concurrent use. The duration costs no clock reading of its own: it
	// is the difference of the two the server takes anyway (see
	// monoNow), so it also counts the parsing of the request and, for a
	// request that arrives in pieces, the wait for its rest.
	Observe func(mapName string, status Status, d time.Duration)

	shutdown atomic.Bool

	limitLog limitLog

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	drained   chan struct{} // closed when conns empties during Shutdown
	forced    atomic.Bool   // Shutdown's deadline passed: lookups start cancelled
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Serve accepts connections on l and serves each in its own goroutine until
// Shutdown is called, then returns ErrServerClosed. Serve may be called for
// several listeners at once. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		l.Close()
		return errors.New("socketmap: Server.Handler is nil")
	}
	if !s.trackListener(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.untrackListener(l)

	slot := new(listenerSlot)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			if temporaryAcceptError(err) {
				// Out of file descriptors or memory: back off
				// instead of spinning, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("socketmap: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("socketmap: accept: %w", err)
		}
		delay = 0
		c := s.newConn(nc, slot)
		if !s.trackConn(c) {
			continue
		}
		go c.serve()
	}
}

// temporaryAcceptError reports whether Accept may succeed later.
func temporaryAcceptError(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) trackListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) untrackListener(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	l.Close()
}

// trackConn registers c, or closes it if the server is shutting down or
// its listener is at MaxConns and no connection can make room (see
// MaxConns).
func (s *Server) trackConn(c *conn) bool {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		c.nc.Close()
		return false
	}
	var (
		victim *conn
		why    limitAction
	)
	if s.MaxConns > 0 && c.slot.n >= s.MaxConns {
		victim, why = s.evictLocked(c.slot, monoNow())
		if victim == nil {
			s.mu.Unlock()
			s.limitLog.note(s.logger(), why, c.remote, "", s.MaxConns)
			c.nc.Close()
			return false
		}
		s.untrackLocked(victim)
	}
	s.conns[c] = struct{}{}
	c.slot.n++
	s.mu.Unlock()
	if victim != nil {
		victim.kill()
		s.limitLog.note(s.logger(), why, c.remote, victim.remote, s.MaxConns)
	}
	return true
}

// evictLocked picks the connection of slot that makes room for a new one
// and marks it closed: the one idle for longest, else the one whose
// request has been in progress for longest, if longer than SlowRequest.
// It returns nil and limitRefused when there is none. now is the time
// since monoBase.
//
// Every connection's state is read with one atomic load and claimed with a
// compare-and-swap on that value; the sequence number in the state makes a
// claim fail when the connection has moved on since (no ABA). A connection
// inside the Handler is never chosen: the watchdog bounds it.
func (s *Server) evictLocked(slot *listenerSlot, now time.Duration) (*conn, limitAction) {
	slow := orDefault(s.SlowRequest, DefaultSlowRequest)
	for {
		var idle, busy *conn
		var idleSt, busySt uint64
		var idleSince, busySince time.Duration
		for o := range s.conns {
			if o.slot != slot {
				continue
			}
			st := o.state.Load()
			since := time.Duration(o.since.Load())
			switch st & phaseMask {
			case phaseIdle:
				if idle == nil || since < idleSince {
					idle, idleSt, idleSince = o, st, since
				}
			case phaseActive:
				if now-since > slow && (busy == nil || since < busySince) {
					busy, busySt, busySince = o, st, since
				}
			}
		}
		switch {
		case idle != nil:
			if idle.state.CompareAndSwap(idleSt, idleSt&^phaseMask|phaseClosed) {
				return idle, limitEvictedIdle
			}
		case busy != nil:
			if busy.state.CompareAndSwap(busySt, busySt&^phaseMask|phaseClosed) {
				return busy, limitEvictedSlow
			}
		default:
			return nil, limitRefused
		}
		// The chosen connection changed state meanwhile: look again.
	}
}

// untrack forgets c; it may be called more than once.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.untrackLocked(c)
}

func (s *Server) untrackLocked(c *conn) {
	if _, ok := s.conns[c]; !ok {
		if c.hung { // its goroutine has ended: the slot is free
			c.hung = false
			c.slot.n--
		}
		return
	}
	delete(s.conns, c)
	c.slot.n--
	if len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns ErrServerClosed), closes idle connections at once, lets each busy
// connection finish the request it is answering and then closes it, and
// waits for all connections to be gone. If ctx ends first, Shutdown closes
// the remaining connections, cancels the contexts of running lookups and
// returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	var err error
	for l := range s.listeners {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("socketmap: close listener: %w", cerr)
		}
		delete(s.listeners, l)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	// A connection that is not idle now sees the shutdown flag when it has
	// written its current reply, and closes itself.
	for _, c := range conns {
		c.closeIfIdle()
	}

	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return err
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	drained := s.drained
	s.mu.Unlock()

	select {
	case <-drained:
		return err
	case <-ctx.Done():
		s.forced.Store(true)
		s.mu.Lock()
		for c := range s.conns {
			c.kill()
			if st := c.state.Load(); st&phaseMask == phaseHandler {
				if rc := c.cur.Load(); rc != nil {
					rc.cancel(context.Canceled)
				}
			}
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Connection phases, kept in the low two bits of conn.state; the bits
// above count phase changes (each request, and each start of one after
// idling), so that a compare-and-swap by a late watchdog or by MaxConns
// eviction cannot hit a later phase (no ABA).
const (
	phaseIdle    = iota // waiting for the first byte of a request
	phaseActive         // reading a request or writing a reply
	phaseHandler        // inside Handler.Lookup
	phaseClosed         // closed by Shutdown or by the watchdog
	phaseMask    = 3
)

// stateOf builds a conn.state value.
func stateOf(seq, phase uint64) uint64 { return seq<<2 | phase }

// monoBase anchors the server's times to the monotonic clock: they are
// durations since monoBase.
var monoBase = time.Now()

// monoNow returns the time since monoBase. It reads the clock once, where
// time.Now reads it twice (wall and monotonic); a clock reading costs
// 50–100 ns on a virtual machine (kvm-clock), so a request reads it only
// twice, when it arrives and when its Handler returns (see conn.now),
// where it used to read it eleven times: that cut the server's own work
// per request by a third (BenchmarkServeLoop, paired runs on a loaded
// 2-core VM: median 970 → 650 ns).
func monoNow() time.Duration { return time.Since(monoBase) }

// conn is one client connection. Its fields are used by its own goroutine
// only, except state (shared with Shutdown and the watchdog), deadline and
// curMap/curKey (read by the watchdog after it has seen phaseHandler), and
// out, which the watchdog takes over when it wins the state.
type conn struct {
	s      *Server
	slot   *listenerSlot // the listener's connection count, under s.mu
	hung   bool          // answered by the watchdog, Handler still running; under s.mu
	nc     net.Conn
	raw    syscall.RawConn // nc's, for raw mode (rawio.go); nil if nc has none
	remote string
	in     source // what r reads from
	r      *bufio.Reader
	d      *Decoder
	out    []byte // replies not written yet
	log    *slog.Logger
	// observe is Server.Observe, or nil.
	observe func(mapName string, status Status, d time.Duration)

	readTimeout, idleTimeout, requestTimeout time.Duration
	idleSlack                                time.Duration

	// Current deadlines, since monoBase, owned by whoever owns the
	// connection (see setIdleDeadline).
	rdl, wdl time.Duration
	rdlIdle  bool // rdl is an idle deadline
	partial  bool // a request has begun to arrive; rdl is its ReadTimeout

	// now is the conn goroutine's latest clock reading, since monoBase:
	// when the current request arrived, then when its Handler returned.
	// Everything else the request needs a time for (phase starts,
	// deadlines) uses it instead of reading the clock again.
	now time.Duration

	state    atomic.Uint64
	seq      uint64                         // phase changes; owned by the conn goroutine
	since    atomic.Int64                   // since monoBase: when the current idle or active phase began
	deadline atomic.Int64                   // watchdog deadline of the running Lookup, since monoBase
	watchdog *time.Timer                    // runs fire; see armWatchdog
	wdArmed  atomic.Bool                    // watchdog is pending: whoever sets it may Reset it
	cur      atomic.Pointer[requestContext] // context of the running Lookup
	curMap   string
	curKey   string
	mapStr   string // previous map name, reused while it repeats
	linger   bool   // close with lingerClose: an error reply was sent

	// answering is held by the watchdog from before it takes the
	// connection over until it has answered, so that the conn goroutine,
	// seeing it has been taken over, can wait for that before closing.
	answering sync.Mutex

	closeOnce sync.Once
}

// Buffer sizes. Postfix's requests and replies are a few dozen bytes.
const (
	readBufSize = 4096
	// outFlushSize is how much of pipelined replies is kept before
	// writing them out.
	outFlushSize = 4096
	// maxOutKeep is the largest output buffer kept once written: a
	// reply of up to MaxReplySize grows it.
	maxOutKeep = 64 << 10
)

func (s *Server) newConn(nc net.Conn, slot *listenerSlot) *conn {
	remote := nc.RemoteAddr().String()
	if remote == "" || remote == "@" {
		remote = nc.RemoteAddr().Network()
	}
	c := &conn{
		s:              s,
		slot:           slot,
		nc:             nc,
		raw:            rawConnOf(nc),
		remote:         remote,
		in:             source{nc: nc, fd: -1},
		out:            make([]byte, 0, outFlushSize),
		log:            s.logger(),
		observe:        s.Observe,
		readTimeout:    orDefault(s.ReadTimeout, DefaultReadTimeout),
		idleTimeout:    orDefault(s.IdleTimeout, DefaultIdleTimeout),
		requestTimeout: orDefault(s.RequestTimeout, DefaultRequestTimeout),
	}
	c.r = bufio.NewReaderSize(&c.in, readBufSize)
	c.d = NewDecoder(c.r, s.MaxRequestSize)
	c.idleSlack = min(c.idleTimeout/8, time.Second)
	c.now = monoNow()
	c.since.Store(int64(c.now))
	c.state.Store(phaseActive)
	c.watchdog = time.AfterFunc(c.requestTimeout, c.fire)
	c.watchdog.Stop() // armed by the first Lookup
	return c
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

// writeReply appends the encoded reply r to the output buffer.
func (c *conn) writeReply(r Reply) {
	c.out = AppendReply(c.out, r)
}

// flush writes the output buffer, blocking up to the write deadline; now
// is a recent clock reading.
func (c *conn) flush(now time.Duration) error {
	if len(c.out) == 0 {
		return nil
	}
	c.renewWriteDeadline(now)
	_, err := c.nc.Write(c.out)
	c.resetOut()
	return err
}

// resetOut empties the output buffer, dropping it if a large reply grew it.
func (c *conn) resetOut() {
	if cap(c.out) > maxOutKeep {
		c.out = make([]byte, 0, outFlushSize)
	}
	c.out = c.out[:0]
}

// writeOut writes the output buffer: in raw mode without blocking (it
// returns errWouldBlock if the socket does not take it all), else through
// flush.
func (c *conn) writeOut() error {
	if c.in.fd >= 0 {
		return c.writeRaw()
	}
	return c.flush(c.now)
}

// Deadlines are renewed lazily. Setting one costs a lock and a runtime
// timer update per call; at one read and one write per request that was a
// measurable share of the server's user time. So a deadline that is still
// far enough away is left as it is.

// renewWriteDeadline makes sure a write blocks at most ReadTimeout and at
// least half of it.
func (c *conn) renewWriteDeadline(now time.Duration) {
	if c.wdl-now < c.readTimeout/2 {
		c.wdl = now + c.readTimeout
		_ = c.nc.SetWriteDeadline(monoBase.Add(c.wdl))
	}
}

// setIdleDeadline arms the idle timeout before waiting for a request. It
// keeps an idle deadline set less than idleSlack before now. now is when
// the last Handler returned: it may be behind by the time the reply took
// to be written, which the kept deadline may then come early by too.
func (c *conn) setIdleDeadline(now time.Duration) {
	if c.rdlIdle && c.rdl-now >= c.idleTimeout-c.idleSlack {
		return
	}
	c.rdl, c.rdlIdle = monoNow()+c.idleTimeout, true
	_ = c.nc.SetReadDeadline(monoBase.Add(c.rdl))
}

// setRequestDeadline arms ReadTimeout for the rest of a started request.
func (c *conn) setRequestDeadline(now time.Duration) {
	c.rdl, c.rdlIdle = now+c.readTimeout, false
	_ = c.nc.SetReadDeadline(monoBase.Add(c.rdl))
}

// outcome is how conn.loop ended.
type outcome int

const (
	done       outcome = iota // the connection is over
	handedOver                // the watchdog or MaxConns has taken the connection over
	next                      // (conn.request) the request is answered: go on
	// Raw mode only (see rawio.go):
	waitInput    // the socket has nothing more to read
	writeBlocked // the socket did not take all replies at once
	readBlocked  // a request is larger than the read buffer, or reading it failed
)

// serve reads requests and writes replies until the client closes the
// connection, an error occurs, or the server shuts down.
func (c *conn) serve() {
	takenOver := false
	defer func() {
		c.watchdog.Stop()
		if takenOver || c.linger {
			// The watchdog has answered (or MaxConns closed
			// c): what is left is closing the socket.
			c.lingerClose()
		} else {
			c.close()
		}
		c.s.untrack(c)
	}()
	for {
		var o outcome
		if c.raw != nil {
			o = c.serveRaw()
		} else {
			o = c.loop()
		}
		switch o {
		case writeBlocked:
			if err := c.flush(monoNow()); err != nil {
				c.log.Debug("socketmap: write failed", "remote", c.remote, "err", err)
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
// Replies are buffered and written only when no further complete request
// is already buffered: pipelined requests get their replies in one write,
// while a client that waits for each reply (Postfix) gets it at once, and
// so does one whose next request is still arriving.
//
// In raw mode (inside raw.Read, c.in.fd set) loop never blocks: it returns
// waitInput when the socket has nothing more to read, and writeBlocked or
// readBlocked for serve to do that part outside raw.Read.
func (c *conn) loop() outcome {
	raw := c.in.fd >= 0
	for {
		if c.r.Buffered() == 0 {
			// No request has begun: write the replies, then wait
			// for one.
			if err := c.writeOut(); err == errWouldBlock {
				return writeBlocked
			} else if err != nil {
				c.log.Debug("socketmap: write failed", "remote", c.remote, "err", err)
				return done
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
			c.now = monoNow()
			c.since.Store(int64(c.now))
			if !c.state.CompareAndSwap(stateOf(c.seq, phaseIdle), stateOf(c.seq+1, phaseActive)) {
				return done // closed by Shutdown or MaxConns
			}
			c.seq++
		}
		if !c.d.Buffered() {
			// The rest of the request is still on its way: the
			// answers to those before it go out first.
			if err := c.writeOut(); err == errWouldBlock {
				return writeBlocked
			} else if err != nil {
				c.log.Debug("socketmap: write failed", "remote", c.remote, "err", err)
				return done
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
					// the Decoder reads the rest, or says
					// what is wrong.
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
	payload, err := c.d.Next()
	if c.partial {
		c.partial = false
		// Its ReadTimeout is of no use any more, and would make a
		// raw.Read started after it fail (see serveRaw).
		c.setIdleDeadline(c.now)
	}
	if err != nil {
		c.readFailed(err, false)
		return done
	}
	if !c.handle(payload) {
		// The watchdog has answered and serve is to close the
		// connection, or MaxConns has closed it.
		return handedOver
	}
	if c.s.shutdown.Load() || len(c.out) >= outFlushSize {
		if err := c.writeOut(); err == errWouldBlock {
			return writeBlocked
		} else if err != nil {
			c.log.Debug("socketmap: write failed", "remote", c.remote, "err", err)
			return done
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
	case errors.Is(err, ErrMalformed):
		// A netstring stream cannot be resynchronised: answer and close.
		c.log.Warn("socketmap: malformed request; closing connection", "remote", c.remote, "err", err)
		c.writeReply(Reply{Status: StatusPerm, Data: "bad request"})
		c.observeReply("", StatusPerm, 0)
		c.linger = c.flush(monoNow()) == nil
	case errors.Is(err, os.ErrDeadlineExceeded) && idle:
		c.log.Debug("socketmap: closing idle connection", "remote", c.remote, "idle_timeout", c.idleTimeout)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn("socketmap: request not complete within read timeout; closing connection",
			"remote", c.remote, "read_timeout", c.readTimeout)
	default:
		c.log.Debug("socketmap: read failed", "remote", c.remote, "err", err)
	}
}

// mapName returns name as a string, reusing the previous one when equal:
// a connection normally asks one map over and over.
func (c *conn) mapName(name []byte) string {
	if string(name) != c.mapStr {
		c.mapStr = string(name)
	}
	return c.mapStr
}

// handle answers one request payload. It returns false if the watchdog
// took the connection over or MaxConns eviction closed it.
func (c *conn) handle(payload []byte) bool {
	name, key, err := splitRequest(payload)
	if err != nil {
		// The framing is intact, so the connection can go on.
		c.log.Warn("socketmap: bad request", "remote", c.remote, "err", err)
		c.writeReply(Reply{Status: StatusPerm, Data: "bad request"})
		c.observeReply("", StatusPerm, 0)
		return true
	}
	mapName, keyStr := c.mapName(name), string(key)
	start := c.now
	reply, ok := c.lookup(mapName, keyStr)
	if !ok {
		return false // answered by the watchdog, if at all
	}
	if n := normalize(reply); n.Status != reply.Status {
		c.log.Warn("socketmap: handler reply cannot be sent as is; answering TEMP",
			"remote", c.remote, "map", mapName, "key", keyStr, "reason", n.Data)
		reply = n
	}
	c.writeReply(reply)
	// lookup has set c.now to when the Handler returned.
	c.observeReply(mapName, reply.Status, c.now-start)
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.LogAttrs(context.Background(), slog.LevelDebug, "socketmap: lookup",
			slog.String("remote", c.remote), slog.String("map", mapName),
			slog.String("key", keyStr), slog.String("status", reply.Status.String()))
	}
	return true
}

// observeReply reports a reply to Server.Observe, if set.
func (c *conn) observeReply(mapName string, st Status, d time.Duration) {
	if c.observe != nil {
		c.observe(mapName, st, d)
	}
}

// lookup calls the Handler under RequestTimeout. It returns false if the
// watchdog has answered for it, or if the connection was closed by MaxConns
// eviction before the Handler was called.
//
// Why a watchdog and not a worker goroutine: a hung Handler must not hang
// the client, so something other than the blocked goroutine has to answer.
// Handing every request to a second goroutine through channels would cost
// two channel operations and two goroutine switches per request for a
// failure that almost never happens. Instead the Handler runs inline on the
// connection's goroutine, and a per-connection time.AfterFunc timer (see
// armWatchdog) fires when a Lookup may have overrun. Ownership of the
// connection is decided by one compare-and-swap on c.state: if the Handler
// returns first, the connection goes on; if the timer wins, it writes
// "TEMP timeout" and ends the connection (see timeout), and the stuck
// goroutine, whenever the Handler returns, only closes the socket. The
// same timer ends the Handler's context (see requestContext), so a request
// costs no runtime timer of its own.
func (c *conn) lookup(mapName, key string) (Reply, bool) {
	deadline := c.now + c.requestTimeout
	ctx := &requestContext{deadline: monoBase.Add(deadline)}
	if c.s.forced.Load() {
		ctx.err = context.Canceled
	}

	active := stateOf(c.seq, phaseActive)
	c.seq++
	running := stateOf(c.seq, phaseHandler)
	c.curMap, c.curKey = mapName, key
	c.cur.Store(ctx)
	c.deadline.Store(int64(deadline))
	if !c.state.CompareAndSwap(active, running) {
		// Closed by MaxConns while the request was arriving: whoever
		// closed the connection has untracked it.
		return Reply{}, false
	}
	c.armWatchdog()

	reply, err := c.call(ctx, mapName, key)
	// The reply is written from now on: a new active phase, so that time
	// spent in the Handler does not count as a slow request.
	now := monoNow()
	c.since.Store(int64(now))
	if !c.state.CompareAndSwap(running, stateOf(c.seq, phaseActive)) {
		// The watchdog has taken over: let it finish answering
		// before serve closes the connection.
		c.answering.Lock()
		//lint:ignore SA2001 an empty critical section: waiting is the point
		c.answering.Unlock()
		return Reply{}, false
	}
	c.now = now // not before: the watchdog may own c now
	ctx.cancel(context.Canceled)
	if err != nil {
		c.log.Warn("socketmap: lookup failed; answering TEMP",
			"remote", c.remote, "map", mapName, "key", key, "err", err)
		return Reply{Status: StatusTemp, Data: err.Error()}, true
	}
	return reply, true
}

// call runs the Handler, turning a panic into TEMP.
func (c *conn) call(ctx context.Context, mapName, key string) (reply Reply, err error) {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("socketmap: handler panic; answering TEMP",
				"remote", c.remote, "map", mapName, "key", key,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			reply, err = Reply{Status: StatusTemp, Data: "internal error"}, nil
		}
	}()
	return c.s.Handler.Lookup(ctx, mapName, key)
}

// armWatchdog makes sure the watchdog fires by the deadline of the Lookup
// just started. The timer is not stopped when a Lookup returns: it stays
// armed, and when it fires it re-arms itself for the deadline of the Lookup
// running then, or disarms if there is none (see fire). So a busy
// connection touches its timer about once per RequestTimeout, not with a
// Reset and a Stop per request, each of which locks the runtime's timer
// heap (and Reset reads the clock): that took another quarter off the
// server's own work per request (BenchmarkServeLoop, paired runs: median
// 420 → 330 ns).
//
// Whoever sets wdArmed owns the timer until it clears it: the connection
// here, or fire once the timer has fired.
func (c *conn) armWatchdog() {
	if !c.wdArmed.Load() && c.wdArmed.CompareAndSwap(false, true) {
		c.watchdog.Reset(c.requestTimeout)
	}
}

// fire is the watchdog: it runs in its own goroutine when the timer armed
// by armWatchdog expires, and answers for a Lookup that has overrun
// RequestTimeout, re-arms the timer for the deadline of a later Lookup
// still running, or disarms it.
func (c *conn) fire() {
	for {
		st := c.state.Load()
		switch st & phaseMask {
		case phaseClosed:
			return
		case phaseHandler:
			now := monoNow()
			// At least the deadline of the Lookup seen in st: it
			// is stored before the state changes.
			if dl := time.Duration(c.deadline.Load()); now < dl {
				c.watchdog.Reset(dl - now)
				return
			}
			c.answering.Lock()
			if c.state.CompareAndSwap(st, st&^phaseMask|phaseClosed) {
				c.timeout(now)
				c.answering.Unlock()
				return
			}
			c.answering.Unlock()
			continue // the Handler returned just in time: look again
		}
		// No Lookup is running: disarm. A Lookup starting meanwhile
		// either arms the timer itself, or saw it armed, and then has
		// set phaseHandler before we cleared wdArmed, so that a second
		// look finds it (both are sequentially consistent atomics).
		c.wdArmed.Store(false)
		if c.state.Load()&phaseMask != phaseHandler || !c.wdArmed.CompareAndSwap(false, true) {
			return
		}
	}
}

// timeout answers TEMP for a Lookup that has overrun RequestTimeout and
// ends the connection; fire calls it after taking the connection over at
// time now.
//
// The client gets the replies and then EOF at once, but the socket is
// closed only by the conn goroutine, once the Handler has returned: in raw
// mode that goroutine holds the connection's read lock, which Close would
// wait for. A Handler that never returns keeps its goroutine and a
// half-closed socket.
func (c *conn) timeout(now time.Duration) {
	// Winning the CAS pins the request: c.cur is its context, and c.now
	// is when it arrived (the conn goroutine sets c.now again only once
	// it owns c).
	rc := c.cur.Load()
	c.log.Warn("socketmap: lookup exceeded request timeout; answering TEMP and closing connection",
		"remote", c.remote, "map", c.curMap, "key", c.curKey, "request_timeout", c.requestTimeout)
	c.writeReply(Reply{Status: StatusTemp, Data: "timeout"})
	c.observeReply(c.curMap, StatusTemp, now-c.now)
	cw, ok := c.nc.(interface{ CloseWrite() error })
	flushed := c.flush(now) == nil && ok && cw.CloseWrite() == nil
	// Only now is the Handler's context cancelled: a Handler that honours
	// it returns at once and the connection's goroutine then closes the
	// socket, which must not happen before TEMP is written.
	rc.cancel(context.DeadlineExceeded)
	if !flushed {
		c.kill()
	}
	c.s.forgetHung(c)
}

// forgetHung stops Shutdown from waiting for c, which the watchdog has
// answered while its Handler still runs, but keeps c counted against
// MaxConns until its goroutine ends (untrack then frees the slot): a
// Handler that hangs keeps a goroutine and a socket, and freeing the slot
// at the timeout let hung lookups pile up without bound. With every slot
// hung, newcomers are refused (Postfix defers), never queued.
func (s *Server) forgetHung(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return // closed meanwhile (Shutdown, MaxConns): nothing held
	}
	c.hung = true
	delete(s.conns, c)
	if len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
