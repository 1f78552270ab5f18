package connserver

import (
	"context"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
)

// handle calls the Session under RequestTimeout and appends its answer. It
// returns false if the watchdog has answered instead, or if MaxConns
// closed the connection before the Call.
//
// Why a watchdog and not a worker goroutine: a hung Handler must not hang
// the client, so something other than the blocked goroutine has to
// answer. Handing every request to a second goroutine through channels
// would cost two channel operations and two goroutine switches per request
// for a failure that almost never happens. Instead the Call runs inline on
// the connection's goroutine, and a per-connection time.AfterFunc timer
// (see armWatchdog) fires when a Call may have overrun. Ownership of the
// connection is decided by one compare-and-swap on c.state: if the Call
// returns first, the connection goes on; if the timer wins, it answers
// with Session.Timeout and ends the connection (see timeout), and the
// stuck goroutine, whenever the Call returns, only closes the socket. The
// same timer ends the Call's context (see requestContext), so a request
// costs no runtime timer of its own.
func (c *conn) handle() bool {
	deadline := c.now + c.requestTimeout
	ctx := &requestContext{deadline: mono.Time(deadline)}
	if c.s.forced.Load() {
		ctx.err = context.Canceled
	}

	active := stateOf(c.seq, phaseActive)
	c.seq++
	running := stateOf(c.seq, phaseHandler)
	c.cur.Store(ctx)
	c.deadline.Store(int64(deadline))
	if !c.state.CompareAndSwap(active, running) {
		// Closed by MaxConns while the request was arriving: whoever
		// closed the connection has untracked it.
		return false
	}
	c.armWatchdog()

	c.sess.Call(ctx)
	// The answer is written from now on: a new active phase, so that time
	// spent in the Call does not count as a slow request.
	now := mono.Now()
	c.since.Store(int64(now))
	if !c.state.CompareAndSwap(running, stateOf(c.seq, phaseActive)) {
		// The watchdog has taken over: let it finish answering
		// before serve closes the connection.
		c.answering.Lock()
		//lint:ignore SA2001 an empty critical section: waiting is the point
		c.answering.Unlock()
		return false
	}
	start := c.now
	c.now = now // not before: the watchdog may own c until the swap
	ctx.cancel(context.Canceled)
	c.out = c.sess.Append(c.out, now-start)
	return true
}

// armWatchdog makes sure the watchdog fires by the deadline of the Call
// just started. The timer is not stopped when a Call returns: it stays
// armed, and when it fires it re-arms itself for the deadline of the Call
// running then, or disarms if there is none (see fire). So a busy
// connection touches its timer about once per RequestTimeout, not with a
// Reset and a Stop per request, each of which locks the runtime's timer
// heap.
//
// Whoever sets wdArmed owns the timer until it clears it: the connection
// here, or fire once the timer has fired.
func (c *conn) armWatchdog() {
	if !c.wdArmed.Load() && c.wdArmed.CompareAndSwap(false, true) {
		c.watchdog.Reset(c.requestTimeout)
	}
}

// fire is the watchdog: it runs in its own goroutine when the timer armed
// by armWatchdog expires, and answers for a Call that has overrun
// RequestTimeout, re-arms the timer for the deadline of a later Call still
// running, or disarms it.
func (c *conn) fire() {
	for {
		st := c.state.Load()
		switch st & phaseMask {
		case phaseClosed:
			return
		case phaseHandler:
			now := mono.Now()
			// At least the deadline of the Call seen in st: it is
			// stored before the state changes.
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
			continue // the Call returned just in time: look again
		}
		// No Call is running: disarm. A Call starting meanwhile either
		// arms the timer itself, or saw it armed, and then has set
		// phaseHandler before we cleared wdArmed, so that a second look
		// finds it (both are sequentially consistent atomics).
		c.wdArmed.Store(false)
		if c.state.Load()&phaseMask != phaseHandler || !c.wdArmed.CompareAndSwap(false, true) {
			return
		}
	}
}

// timeout answers for a Call that has overrun RequestTimeout and ends the
// connection; fire calls it after taking the connection over at time now.
//
// The client gets the answers and then EOF at once, but the socket is
// closed only by the conn goroutine, once the Call has returned: in raw
// mode that goroutine holds the connection's read lock, which Close would
// wait for. A Handler that never returns keeps its goroutine and a
// half-closed socket.
func (c *conn) timeout(now time.Duration) {
	// Winning the CAS pins the request: c.cur is its context, and c.now
	// is when it arrived (the conn goroutine sets c.now again only once
	// it owns c).
	rc := c.cur.Load()
	c.out = c.sess.Timeout(c.out, now-c.now)
	cw, ok := c.nc.(interface{ CloseWrite() error })
	flushed := c.flush(now) == nil && ok && cw.CloseWrite() == nil
	// Only now is the Call's context cancelled: a Handler that honours it
	// returns at once and the connection's goroutine then closes the
	// socket, which must not happen before the answer is written.
	rc.cancel(context.DeadlineExceeded)
	if !flushed {
		c.kill()
	}
	c.s.forgetHung(c)
}
