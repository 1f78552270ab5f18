package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of the Server's zero fields.
const (
	DefaultReadTimeout    = 10 * time.Second
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultRequestTimeout = 5 * time.Second
	DefaultDeferText      = "450 4.7.10 TLS policy service temporarily unavailable; try again later"
	// DefaultSlowRequest is how long a request may take to arrive before
	// its connection may give its place to a new one at MaxConns. Postfix
	// writes a request in one write; only a slow-loris client dribbles.
	DefaultSlowRequest = time.Second
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policyd: server closed")

// Server answers policy delegation requests on the listeners given to
// Serve, one goroutine per connection, connections kept open across
// requests as Postfix expects (one per smtpd process, kept for minutes).
//
// It fails closed: a Handler error, panic or overrun of RequestTimeout, and
// an Action that cannot be sent safely, are all answered with DeferText, a
// temporary rejection, never with DUNNO or OK. A malformed request closes
// the connection without a reply.
//
// Set the fields before the first Serve and do not change them afterwards.
type Server struct {
	// Handler decides every request. Required.
	Handler Handler
	// Logger receives connection and request logs; nil means slog.Default().
	// Each request is logged at Debug with the fields remote, sender,
	// recipient and action; failures at Warn or Error with the same fields.
	Logger *slog.Logger
	// ReadTimeout bounds the reading of one request once its first byte
	// has arrived, and the writing of a reply. Default 10s. Like
	// IdleTimeout it may end up to 1/64 later than set, never earlier
	// (see conn.armRead).
	ReadTimeout time.Duration
	// IdleTimeout closes a connection on which no request starts for that
	// long. Postfix reconnects transparently. Default 5m.
	IdleTimeout time.Duration
	// RequestTimeout bounds one Handler call. The Handler's context ends
	// then; if the Handler has not returned by that time the client gets
	// DeferText at once and the connection is closed. Default 5s.
	RequestTimeout time.Duration
	// MaxConns caps the simultaneous connections accepted from each
	// listener given to Serve; 0 means no limit. A connection arriving at
	// the limit takes the place of the connection idle for longest
	// (Postfix reopens a closed idle connection without fuss); failing
	// that, of the connection whose current request has been in progress
	// longest, if that is more than SlowRequest (a slow-loris client:
	// Postfix writes a request in one go); failing that, the newcomer is
	// closed at once. Nothing waits in a queue. The log gets at most one
	// line per kind of action every 10 s, with counts.
	MaxConns int
	// SlowRequest is how long a request may be in progress (its first
	// byte arrived, the reply not yet written; time in the Handler does
	// not count) before its connection may be closed to make room for a
	// new one at MaxConns (default DefaultSlowRequest). ReadTimeout still
	// bounds every request when the server is not full.
	SlowRequest time.Duration
	// DeferText is the action sent when the Handler cannot give one (fail
	// closed). Default DefaultDeferText. It must be a valid action
	// (ValidAction) and should be a 4xx deferral.
	DeferText string
	// Observe, if set, is called once for every reply the server sends:
	// with the request, the action sent, whether that action is DeferText
	// sent because the Handler could not give one (an error, a panic, an
	// invalid action, or an overrun of RequestTimeout, which the watchdog
	// answers), and the time from the request's arrival to its reply. It
	// is what Postfix got, which a wrapper around the Handler cannot see.
	// A malformed request gets no reply and is not observed.
	//
	// req is valid only during the call. Observe runs on every request's
	// path, on the connection's goroutine or, for a timeout, on the
	// watchdog's while the Handler may still be reading req: it must be
	// quick, safe for concurrent use, and must not modify req. The
	// duration costs no clock reading of its own: it is the difference
	// of the two the server takes anyway (see monoNow).
	Observe func(req *Request, action Action, failed bool, d time.Duration)

	limitLog limitLog

	mu          sync.Mutex
	listeners   map[*net.Listener]struct{}
	conns       map[*conn]struct{}
	drained     chan struct{} // made by Shutdown, closed when conns is empty
	inShutdown  atomic.Bool
	drainClosed bool
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

func (s *Server) deferAction() Action {
	if s.DeferText != "" {
		return Action(s.DeferText)
	}
	return DefaultDeferText
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown, then returns ErrServerClosed. It closes l when it
// returns. Serve may be called for several listeners at once.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if s.Handler == nil {
		return errors.New("policyd: Server.Handler is nil")
	}
	if a := s.deferAction(); !ValidAction(a) {
		return fmt.Errorf("policyd: DeferText %.80q: %w", string(a), ErrInvalidAction)
	}
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	log := s.logger()
	slot := new(listenerSlot)
	var delay time.Duration
	for {
		rwc, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("policyd: accept: %w", err)
			}
			// Out of file descriptors and the like: back off and retry
			// rather than stop serving for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("policyd: accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := s.newConn(rwc, slot)
		if !s.trackConn(c) {
			rwc.Close()
			continue
		}
		go c.serve()
	}
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[*net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

// trackConn registers c, making room under MaxConns if it can (see
// MaxConns). It reports false when c must be refused.
func (s *Server) trackConn(c *conn) bool {
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		return false
	}
	var (
		victim *conn
		why    limitAction
	)
	if s.MaxConns > 0 && c.slot.n >= s.MaxConns {
		victim, why = s.evictLocked(c.slot, time.Since(monoBase))
		if victim == nil {
			s.mu.Unlock()
			s.limitLog.note(s.logger(), why, c.remote, "", s.MaxConns)
			return false
		}
		s.untrackLocked(victim)
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
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
			case phaseBusy:
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

func (s *Server) untrackConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.untrackLocked(c)
}

// untrackLocked forgets c; it may be called more than once.
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
	s.checkDrainedLocked()
}

func (s *Server) checkDrainedLocked() {
	if s.drained != nil && len(s.conns) == 0 && !s.drainClosed {
		close(s.drained)
		s.drainClosed = true
	}
}

// Shutdown stops the server: it closes the listeners and the idle
// connections at once, then waits for the connections busy with a request
// to send their reply and close. When ctx ends first, it closes those too
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	var errs []error
	for l := range s.listeners {
		if err := (*l).Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("policyd: close listener: %w", err))
		}
		delete(s.listeners, l)
	}
	for c := range s.conns {
		if st := c.state.Load(); st&phaseMask == phaseIdle && c.state.CompareAndSwap(st, phaseClosed) {
			c.kill()
			s.untrackLocked(c)
		}
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	s.checkDrainedLocked()
	drained := s.drained
	s.mu.Unlock()

	select {
	case <-drained:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			s.logger().Warn("policyd: shutdown deadline; closing busy connection", "remote", c.remote)
			c.kill()
			s.untrackLocked(c)
		}
		s.mu.Unlock()
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// Connection phases, kept in the low two bits of conn.state, for Shutdown
// and MaxConns: only an idle connection, or one whose request is slow to
// arrive, may be closed under its feet. The bits above count phase
// changes, so that a compare-and-swap on a state read earlier fails once
// the connection has moved on (no ABA).
const (
	phaseIdle    = iota // waiting for the first byte of a request
	phaseBusy           // reading a request or writing a reply
	phaseHandler        // inside Handler.Check
	phaseClosed         // closed by Shutdown, MaxConns or the watchdog
	phaseMask    = 3
)

// stateOf builds a conn.state value.
func stateOf(seq, phase uint64) uint64 { return seq<<2 | phase }

// monoBase anchors conn.since, conn.now and the deadlines to the monotonic
// clock.
var monoBase = time.Now()

// monoNow reads the monotonic clock, as the time since monoBase. A clock
// reading costs 50–100 ns on a virtual machine (kvm-clock; time.Now reads
// two clocks), so a request reads it twice, when it arrives and when its
// Handler returns (conn.now), instead of six times.
func monoNow() time.Duration { return time.Since(monoBase) }

// handlerTimedOut marks conn.running once the watchdog has answered.
const handlerTimedOut = ^uint64(0)

type conn struct {
	srv    *Server
	slot   *listenerSlot // the listener's connection count, under srv.mu
	hung   bool          // answered by the watchdog, Handler still running; under srv.mu
	rwc    net.Conn
	remote string
	log    *slog.Logger
	raw    syscall.RawConn // TCP and Unix connections: raw mode (rawio.go); else nil
	src    source          // what br reads from
	br     *bufio.Reader
	dec    *Decoder
	req    Request // reused for every request (Handler's contract)
	out    []byte  // replies not yet written
	waited bool    // the current request was not complete when first looked at
	// finCheck: raw mode waits with the finCheck deadline (rawio.go).
	finCheck bool

	// The read and write deadlines currently set on rwc, since monoBase
	// (see armRead). Owned by the conn goroutine, and by the watchdog
	// once it has fired.
	readDeadline, writeDeadline time.Duration
	// now is the clock (since monoBase) as last read: when the current
	// request arrived, or when its Handler returned. Owned by the conn
	// goroutine.
	now time.Duration

	readTimeout, idleTimeout, requestTimeout time.Duration
	deferAction                              Action
	// observe is Server.Observe, or nil.
	observe func(req *Request, action Action, failed bool, d time.Duration)

	state atomic.Uint64
	seq   uint64       // phase changes; owned by the conn goroutine
	since atomic.Int64 // since monoBase: when the current idle or busy phase began

	// ctx is the parent of every request context; cancelled when the
	// connection closes or the watchdog fires (cause DeadlineExceeded).
	ctx    context.Context
	cancel context.CancelCauseFunc

	// The watchdog enforces RequestTimeout; see handle and armWatchdog.
	watchdog *time.Timer
	wdArmed  atomic.Bool   // the watchdog is pending: whoever sets it may Reset it
	calls    uint64        // Handler calls so far; owned by the conn goroutine
	running  atomic.Uint64 // the running call's number, 0 between calls, handlerTimedOut after the watchdog answered
	deadline atomic.Int64  // since monoBase: RequestTimeout of the running call; stored before running
	cur      *Request      // request being handled, for the watchdog's log

	closeOnce sync.Once
}

func (s *Server) newConn(rwc net.Conn, slot *listenerSlot) *conn {
	c := &conn{
		srv:            s,
		slot:           slot,
		rwc:            rwc,
		log:            s.logger(),
		observe:        s.Observe,
		readTimeout:    orDefault(s.ReadTimeout, DefaultReadTimeout),
		idleTimeout:    orDefault(s.IdleTimeout, DefaultIdleTimeout),
		requestTimeout: orDefault(s.RequestTimeout, DefaultRequestTimeout),
		deferAction:    s.deferAction(),
		out:            make([]byte, 0, 256),
	}
	// Unix-domain clients are unnamed ("" or "@"): name the socket instead.
	if a := rwc.RemoteAddr(); a != nil && a.Network() != "unix" && a.String() != "" {
		c.remote = a.String()
	} else {
		c.remote = "unix:" + rwc.LocalAddr().String()
	}
	c.raw = rawConnOf(rwc)
	c.src = source{nc: rwc, fd: -1}
	c.br = bufio.NewReaderSize(&c.src, 4096)
	c.dec = NewDecoder(c.br)
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.now = monoNow()
	c.since.Store(int64(c.now))
	c.watchdog = time.AfterFunc(c.requestTimeout, c.fire)
	c.watchdog.Stop() // armed by the first Handler call
	return c
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.state.Store(phaseClosed)
		c.cancel(context.Canceled)
		c.rwc.Close()
	})
}

// outcome is what a step of the request loop leaves to serve.
type outcome int

const (
	goOn       outcome = iota // next request
	done                      // the connection is finished
	handedOver                // the watchdog has answered and ended the connection
	waitInput                 // raw mode: wait for the socket to become readable
	needRead                  // raw mode: go on reading the current request with blocking reads
	needWrite                 // raw mode: write the replies with blocking writes
)

// serve runs the connection: wait (idle) for a request, read it, answer
// it, repeat. Pipelined requests are answered in one write. TCP and Unix
// connections are served in raw mode (rawio.go) as far as it goes, others
// with blocking reads and writes.
func (c *conn) serve() {
	o := goOn
	defer func() {
		c.watchdog.Stop()
		if o != handedOver && len(c.out) > 0 && c.state.Load()&phaseMask != phaseClosed {
			_ = c.flush()
		}
		c.close()
		c.srv.untrackConn(c)
	}()
	c.log.Debug("policyd: connection opened", "remote", c.remote)
	for {
		switch o {
		case goOn:
			if c.raw != nil {
				o = c.serveRaw()
			} else {
				o = c.serveBlocking()
			}
		case needRead:
			o = c.serveBlocking()
		case needWrite:
			o = c.flushReplies()
		default:
			return
		}
	}
}

// serveBlocking waits for a request unless one has begun (raw mode hands
// over a request larger than its buffer), answers it and those pipelined
// behind it, and writes the replies, with blocking reads and writes.
func (c *conn) serveBlocking() outcome {
	if c.state.Load()&phaseMask == phaseIdle {
		if c.br.Buffered() == 0 {
			// c.now is when the last reply was made, moments ago.
			c.armRead(c.idleTimeout)
			if _, err := c.br.Peek(1); err != nil {
				c.logIdleEnd(err)
				return done
			}
			c.now = monoNow()
		}
		if !c.begin() {
			return done
		}
	}
	for {
		if !c.requestBuffered() {
			c.armRead(c.readTimeout) // from the request's first byte
			c.waited = true
		}
		if o := c.answer(); o != goOn {
			return o
		}
		if !c.requestBuffered() {
			break
		}
		// The next request is already here in full: answer it before
		// writing, so that pipelined requests cost one write.
	}
	return c.flushReplies()
}

// begin starts the busy phase of a request whose first bytes arrived at
// c.now. It reports false when Shutdown or MaxConns has closed the
// connection meanwhile.
func (c *conn) begin() bool {
	// since first, so that whoever sees the new phase sees its start
	// time.
	c.since.Store(int64(c.now))
	if !c.state.CompareAndSwap(stateOf(c.seq, phaseIdle), stateOf(c.seq+1, phaseBusy)) {
		return false
	}
	c.seq++
	return true
}

// answer decodes the next request, calls the Handler and queues the reply.
// c.waited says whether the request had to be waited for, so that the
// Handler's time starts when it is complete.
func (c *conn) answer() outcome {
	req := &c.req
	err := c.dec.Decode(req)
	if c.waited {
		c.now = monoNow()
		c.waited = false
	}
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			c.log.Warn("policyd: bad request; closing connection", "remote", c.remote, "err", err)
		} else {
			c.log.Warn("policyd: reading request failed; closing connection", "remote", c.remote, "err", err)
		}
		return done
	}
	action, ok := c.handle(req)
	if !ok {
		return handedOver
	}
	c.out, _ = AppendAction(c.out, action) // valid: checked by handle
	if c.srv.inShutdown.Load() {
		return done // serve writes the replies
	}
	return goOn
}

// flushReplies writes the queued replies with a blocking write, then
// makes the connection idle.
func (c *conn) flushReplies() outcome {
	if err := c.flush(); err != nil {
		c.log.Debug("policyd: write failed; closing connection", "remote", c.remote, "err", err)
		return done
	}
	return c.replied()
}

// replied makes the connection idle once its replies are written.
func (c *conn) replied() outcome {
	c.src.trustShort = true // see Raw mode in rawio.go
	c.since.Store(int64(c.now))
	idle := stateOf(c.seq, phaseIdle)
	if !c.state.CompareAndSwap(stateOf(c.seq, phaseBusy), idle) {
		return done // closed by Shutdown or MaxConns
	}
	// Shutdown may have looked at this connection while it was busy.
	if c.srv.inShutdown.Load() && c.state.CompareAndSwap(idle, phaseClosed) {
		return done
	}
	return goOn
}

func (c *conn) logIdleEnd(err error) {
	var ne net.Error
	switch {
	case c.state.Load()&phaseMask == phaseClosed:
		c.log.Debug("policyd: idle connection closed by server", "remote", c.remote)
	case err == io.EOF:
		c.log.Debug("policyd: connection closed by client", "remote", c.remote)
	case errors.As(err, &ne) && ne.Timeout():
		c.log.Debug("policyd: idle timeout; closing connection", "remote", c.remote, "idle", c.idleTimeout)
	default:
		c.log.Debug("policyd: connection lost", "remote", c.remote, "err", err)
	}
}

// requestBuffered reports whether a whole request (up to its empty line)
// is in the read buffer, so that Decode will not wait for the network.
// Postfix writes each request at once, so this is the common case and
// spares a deadline update.
func (c *conn) requestBuffered() bool {
	n := c.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.br.Peek(n)
	// A buffer that ends a request is the common case: Postfix writes a
	// request at once and waits for the reply, so a look at the last two
	// bytes says it all, where a search of the buffer had been 4 % of the
	// daemon's CPU per policy request. Then "\n\n" before "\n\r\n":
	// Postfix ends its lines with "\n".
	return bytes.HasSuffix(b, []byte("\n\n")) || b[0] == '\n' || bytes.Contains(b, []byte("\n\n")) ||
		bytes.HasPrefix(b, []byte("\r\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// armRead makes sure the read deadline falls between c.now+d and
// c.now+d+d/64, and armWrite the same for the write deadline.
//
// A deadline is moved only when the one set would fire too early or too
// late, and then set d/64 later than required, so that the next requests
// find it still right: a busy connection updates its deadlines once every
// few seconds instead of twice per request. Each update is a runtime timer
// modification: setting both deadlines took 0.41 µs, checking them 0.13 µs
// with two clock readings (a throwaway benchmark on the 2-core VM), and
// now without those readings. The price is that a timeout may fire up to
// 1/64 of its length late (4.7 s of the default 5 min idle timeout).
func (c *conn) armRead(d time.Duration) {
	if armDeadline(&c.readDeadline, c.now, d) {
		_ = c.rwc.SetReadDeadline(monoBase.Add(c.readDeadline))
	}
}

func (c *conn) armWrite(d time.Duration) {
	if armDeadline(&c.writeDeadline, c.now, d) {
		_ = c.rwc.SetWriteDeadline(monoBase.Add(c.writeDeadline))
	}
}

// armDeadline updates *dl for armRead and armWrite and reports whether it
// changed.
func armDeadline(dl *time.Duration, now, d time.Duration) bool {
	earliest := now + d
	latest := earliest + d/64
	if *dl >= earliest && *dl <= latest {
		return false
	}
	*dl = latest
	return true
}

func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	c.armWrite(c.readTimeout)
	_, err := c.rwc.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// requestContext is the context of one Handler call: the connection's
// context with the request's deadline. The deadline itself is enforced by
// the connection's watchdog, which cancels the connection's context.
type requestContext struct {
	context.Context
	deadline time.Time
}

func (r *requestContext) Deadline() (time.Time, bool) { return r.deadline, true }

func (r *requestContext) Err() error {
	err := r.Context.Err()
	if err != nil && context.Cause(r.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}

// handle calls the Handler under RequestTimeout and returns the action to
// send, or ok=false when the watchdog has answered instead, or MaxConns
// closed the connection before the Handler was called.
//
// Why a watchdog: the obvious way to bound a Handler that may ignore its
// context is to run it in a new goroutine and select on its result and a
// timer, which costs a goroutine, a channel and a timer for every request.
// Instead the Handler runs on the connection's goroutine, and one
// time.AfterFunc timer per connection is the watchdog (see armWatchdog):
// on the fast path a request costs no timer update and one small context
// allocation. If the watchdog finds a call past its deadline, it answers
// DeferText itself (the connection goroutine is stuck in the Handler and
// owns nothing to write meanwhile), closes the connection and cancels the
// context. An atomic compare-and-swap on c.running, which holds the number
// of the running call, decides who answers when the Handler returns just
// as the timer fires.
func (c *conn) handle(req *Request) (Action, bool) {
	busy := stateOf(c.seq, phaseBusy)
	c.seq++
	inHandler := stateOf(c.seq, phaseHandler)
	if !c.state.CompareAndSwap(busy, inHandler) {
		// Closed by MaxConns while the request was arriving: whoever
		// closed the connection has untracked it.
		return "", false
	}
	start := c.now
	deadline := start + c.requestTimeout
	rctx := &requestContext{Context: c.ctx, deadline: monoBase.Add(deadline)}
	c.cur = req
	c.calls++
	call := c.calls
	c.deadline.Store(int64(deadline)) // before running: see fire
	c.running.Store(call)
	c.armWatchdog()
	action, err := c.call(rctx, req)
	if !c.running.CompareAndSwap(call, 0) {
		c.log.Warn("policyd: handler returned after the request timeout", "remote", c.remote,
			"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", action, "err", err)
		return "", false
	}
	// The reply is written from now on: a new busy phase, so that time
	// spent in the Handler does not count as a slow request. The swap
	// fails only if Shutdown closed the connection meanwhile; the write
	// then fails.
	c.now = monoNow()
	c.since.Store(int64(c.now))
	c.state.CompareAndSwap(inHandler, stateOf(c.seq, phaseBusy))
	failed := true
	switch {
	case errors.Is(err, errHandlerPanic):
		action = c.deferAction // logged by call
	case err != nil:
		c.log.Warn("policyd: handler failed; deferring", "remote", c.remote,
			"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", c.deferAction, "err", err)
		action = c.deferAction
	case !ValidAction(action):
		// A line break would inject attributes into the reply; an empty
		// action is a zero value returned by mistake. Both are bugs.
		c.log.Error("policyd: handler returned an invalid action; deferring", "remote", c.remote,
			"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", c.deferAction,
			"invalid_action", string(action))
		action = c.deferAction
	default:
		failed = false
		if c.log.Enabled(context.Background(), slog.LevelDebug) {
			c.log.Debug("policyd: request", "remote", c.remote,
				"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", action)
		}
	}
	if c.observe != nil {
		c.observe(req, action, failed, c.now-start)
	}
	return action, true
}

// armWatchdog makes sure the watchdog fires by the deadline of the call
// just started. The timer is not stopped when a call returns: it stays
// armed, and when it fires it re-arms itself for the deadline of the call
// running then, or disarms if there is none (see fire). So a busy
// connection touches its timer about once per RequestTimeout instead of a
// Reset and a Stop per request, each of which locks the runtime's timer
// heap: 0.09 µs together uncontended, but Reset alone took 2 % of the
// policy server's CPU time in the tlspolicyd-bench profile at 32
// connections.
//
// Whoever sets wdArmed owns the timer until it clears it: the connection
// here, or fire once the timer has fired.
func (c *conn) armWatchdog() {
	if !c.wdArmed.Load() && c.wdArmed.CompareAndSwap(false, true) {
		c.watchdog.Reset(c.requestTimeout)
	}
}

// fire is the watchdog's callback: it answers for a call that has overrun
// RequestTimeout, re-arms the timer for the deadline of a call still in
// time, or disarms it when no call is running.
func (c *conn) fire() {
	for {
		call := c.running.Load()
		switch call {
		case handlerTimedOut:
			return
		case 0:
			// No call is running: disarm. A call starting meanwhile
			// either arms the timer itself, or saw it armed and had
			// set running before we cleared wdArmed, so that the
			// second look below finds it (both are sequentially
			// consistent atomics).
			c.wdArmed.Store(false)
			if c.running.Load() == 0 || !c.wdArmed.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		// The deadline of this call or of a later one: it is stored
		// before running, and deadlines only grow.
		now := monoNow()
		if dl := time.Duration(c.deadline.Load()); now < dl {
			c.watchdog.Reset(dl - now)
			return
		}
		if c.running.CompareAndSwap(call, handlerTimedOut) {
			c.timeout(now)
			return
		}
		// The call returned just in time, or a later call (whose
		// deadline was read) is running: look again.
	}
}

var errHandlerPanic = errors.New("policy handler panicked")

func (c *conn) call(ctx context.Context, req *Request) (action Action, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("policyd: handler panicked; deferring", "remote", c.remote,
				"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", c.deferAction,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			action, err = "", fmt.Errorf("%w: %v", errHandlerPanic, p)
		}
	}()
	return c.srv.Handler.Check(ctx, req)
}

// timeout answers DeferText for a call that overran RequestTimeout and
// closes the connection; fire calls it after taking the connection over
// at time now.
func (c *conn) timeout(now time.Duration) {
	req := c.cur
	c.log.Warn("policyd: handler exceeded the request timeout; deferring and closing connection",
		"remote", c.remote, "sender", req.Get("sender"), "recipient", req.Get("recipient"),
		"action", c.deferAction, "timeout", c.requestTimeout)
	if c.observe != nil {
		// c.now is still when the request arrived: the conn goroutine
		// sets it again only once it has won c.running back, which it
		// no longer can.
		c.observe(req, c.deferAction, true, now-c.now)
	}
	c.now = now
	c.out, _ = AppendAction(c.out, c.deferAction)
	if err := c.flush(); err != nil {
		c.log.Debug("policyd: write failed", "remote", c.remote, "err", err)
	}
	// Only now is the Handler's context cancelled: a Handler that honours
	// it returns at once, and the connection's goroutine then closes the
	// socket and reuses req, which must not happen before the reply is
	// written and the request logged (an earlier cancel lost the reply:
	// the client read EOF instead of DeferText).
	c.cancel(context.DeadlineExceeded)
	// The connection's goroutine closes the socket when the Handler
	// returns, if ever: in raw mode it holds the read lock, which Close
	// would wait for.
	c.kill()
	c.srv.forgetHung(c)
}

// forgetHung stops Shutdown from waiting for c, answered by the watchdog
// while its Handler still runs, and keeps its MaxConns slot until its
// goroutine ends (untrackLocked frees it): hung requests cannot pile up
// beyond the cap (socketmap.Server does the same).
func (s *Server) forgetHung(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		c.hung = true
		delete(s.conns, c)
		s.checkDrainedLocked()
	}
}
