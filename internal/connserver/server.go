// Package connserver is the connection server under both of Postfix's
// lookup protocols, socketmap_table(5) and SMTPD_POLICY_README: persistent
// connections, one goroutine each, requests answered in order, pipelined
// answers written together. It accepts with back-off, tracks connections
// for MaxConns and Shutdown, bounds every phase of a request with a
// deadline, answers for a Handler that overruns its time (the watchdog),
// and reads and writes TCP sockets in raw mode (rawio.go). What a request
// is and how it is answered is the protocol's Session.
package connserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the Server's zero fields.
const (
	// DefaultReadTimeout bounds the time from a request's first byte to
	// its last.
	DefaultReadTimeout = 10 * time.Second
	// DefaultIdleTimeout closes connections idle this long. Postfix keeps
	// idle connections for 100 s and more (socketmap) or up to
	// max_idle (policy, 300 s) and reconnects silently when the server
	// has closed one, so this only has to be longer to spare reconnects.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultRequestTimeout bounds one Session.Call.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultSlowRequest is how long a request may take to arrive before
	// its connection may give its place to a new one at MaxConns. Postfix
	// writes a request in one write; only a slow-loris client dribbles.
	DefaultSlowRequest = time.Second
)

// Session is one connection's side of the protocol: its decoder and the
// request being answered. The connection's goroutine calls it, one
// request at a time, except Timeout, which the watchdog calls while Call
// still runs.
type Session interface {
	// Complete reports whether a whole request (or bytes known to be
	// malformed) is in the read buffer, so that Read will not wait for
	// the network.
	Complete() bool
	// Read reads the next request from the buffered reader. It returns
	// io.EOF, unwrapped, when the stream ends between two requests.
	Read() error
	// Call answers the request Read read, calling the Handler with ctx,
	// and keeps the answer for Append. It must not panic.
	Call(ctx context.Context)
	// Append appends the answer Call made to out; d is the time from the
	// request's arrival to its answer.
	Append(out []byte, d time.Duration) []byte
	// Timeout logs that the Handler overran RequestTimeout and appends
	// the answer sent instead (fail closed); d is as for Append.
	Timeout(out []byte, d time.Duration) []byte
	// Malformed logs err, a Read error other than the end of the stream
	// or a timeout, and appends the answer that says the request was
	// refused, if the protocol has one; the connection is then closed.
	Malformed(out []byte, err error) []byte
}

// Server serves one protocol on any number of listeners. Set its fields
// before the first Serve and do not change them afterwards.
type Server struct {
	// Name prefixes log messages and errors ("socketmap").
	Name string
	// NewSession returns the Session of a new connection reading from r;
	// remote names the client in logs.
	NewSession func(r *bufio.Reader, remote string) Session
	// ErrClosed is what Serve returns after Shutdown.
	ErrClosed error
	// Logger receives the connection-level log lines. Required.
	Logger *slog.Logger

	// ReadTimeout bounds a request from its first byte to its last, and
	// a write of answers (which fails after between half of it and all of
	// it). IdleTimeout closes a connection on which no request starts for
	// that long; deadlines are renewed lazily, so the close may come up to
	// IdleTimeout/8, at most 1 s, early. RequestTimeout bounds each Call:
	// its context ends then and the watchdog answers (Session.Timeout)
	// and closes the connection. Zero means the Default… value.
	ReadTimeout, IdleTimeout, RequestTimeout time.Duration
	// MaxConns caps the simultaneous connections accepted from each
	// listener (0: no cap). A newcomer at the cap takes the place of the
	// connection idle for longest, else of the one whose request has been
	// arriving for longer than SlowRequest (zero: DefaultSlowRequest),
	// else it is closed at once: nothing waits in a queue (limit.go).
	MaxConns    int
	SlowRequest time.Duration
	// LimitLogEvery is the least time between two log lines about the
	// same MaxConns action (default 10 s; tests shorten it).
	LimitLogEvery time.Duration

	shutdown atomic.Bool
	forced   atomic.Bool // Shutdown's deadline passed: Calls start cancelled
	limitLog limitLog

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	drained   chan struct{} // closed when conns empties during Shutdown
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown, then returns s.ErrClosed. It closes l when it returns.
//
// An Accept error other than a closed listener is retried with a back-off
// of 5 ms doubling to 1 s, as net/http does: running out of descriptors
// (EMFILE) or memory must not end the service for good.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(l) {
		l.Close()
		return s.ErrClosed
	}
	defer s.untrackListener(l)
	slot := new(listenerSlot)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return s.ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s: accept: %w", s.Name, err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.Logger.Warn(s.Name+": accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := s.newConn(nc, slot)
		if !s.trackConn(c) {
			continue
		}
		go c.serve()
	}
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
		s.limitLog.name, s.limitLog.every = s.Name, s.LimitLogEvery
		s.ReadTimeout = orDefault(s.ReadTimeout, DefaultReadTimeout)
		s.IdleTimeout = orDefault(s.IdleTimeout, DefaultIdleTimeout)
		s.RequestTimeout = orDefault(s.RequestTimeout, DefaultRequestTimeout)
		s.SlowRequest = orDefault(s.SlowRequest, DefaultSlowRequest)
	}
	s.listeners[l] = struct{}{}
	return true
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Server) untrackListener(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	l.Close()
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
	s.checkDrainedLocked()
}

func (s *Server) checkDrainedLocked() {
	if len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// forgetHung stops Shutdown from waiting for c, which the watchdog has
// answered while its Call still runs, but keeps c counted against MaxConns
// until its goroutine ends (untrack then frees the slot): a Handler that
// hangs keeps a goroutine and a socket, and freeing the slot at the
// timeout would let hung requests pile up without bound. With every slot
// hung, newcomers are refused (Postfix defers), never queued.
func (s *Server) forgetHung(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return // closed meanwhile (Shutdown, MaxConns): nothing held
	}
	c.hung = true
	delete(s.conns, c)
	s.checkDrainedLocked()
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns ErrClosed), closes idle connections at once, lets each busy
// connection write the answer it is making and then closes it, and waits
// for all connections to be gone. If ctx ends first, Shutdown closes the
// remaining connections, cancels the contexts of running Calls and returns
// ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	var err error
	for l := range s.listeners {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("%s: close listener: %w", s.Name, cerr)
		}
		delete(s.listeners, l)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	// A connection that is not idle now sees the shutdown flag when it has
	// written its current answer, and closes itself.
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
			s.Logger.Warn(s.Name+": shutdown deadline; closing busy connection", "remote", c.remote)
			c.kill()
			if c.state.Load()&phaseMask == phaseHandler {
				if rc := c.cur.Load(); rc != nil {
					rc.cancel(context.Canceled)
				}
			}
		}
		s.mu.Unlock()
		if err != nil {
			return errors.Join(err, ctx.Err())
		}
		return ctx.Err()
	}
}

// Stats counts the connections being served, by phase, and those in raw
// mode; for tests.
type Stats struct{ All, Idle, Active, Handler, Raw int }

// Stats returns the current counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st Stats
	for c := range s.conns {
		st.All++
		switch c.state.Load() & phaseMask {
		case phaseIdle:
			st.Idle++
		case phaseActive:
			st.Active++
		case phaseHandler:
			st.Handler++
		}
		if c.raw != nil {
			st.Raw++
		}
	}
	return st
}
