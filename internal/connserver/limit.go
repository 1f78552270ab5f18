package connserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
)

// listenerSlot counts the connections accepted from one listener, for
// MaxConns. Guarded by Server.mu.
type listenerSlot struct{ n int }

// limitAction is what MaxConns did with a new connection.
type limitAction int

const (
	limitRefused     limitAction = iota // the newcomer was closed
	limitEvictedIdle                    // the longest idle connection was closed
	limitEvictedSlow                    // the slowest request's connection was closed
)

// limitLogEvery is the least time between two log lines about the same
// MaxConns action: a flood of connections must not become a flood of log
// lines.
const limitLogEvery = 10 * time.Second

// limitLog rate-limits the log lines about MaxConns, per action: the first
// event logs at once and opens a window of limitLogEvery; events within
// the window are only counted, and a line at its end reports how many
// there were (and opens the next window), so no count is lost.
type limitLog struct {
	name  string        // the server's, for the messages
	every time.Duration // limitLogEvery if zero; tests shorten it

	mu         sync.Mutex
	open       [3]bool // by limitAction: a window is running
	suppressed [3]int  // by limitAction: events in the window, not logged
}

// limitMessages follow the server's name and a colon.
var limitMessages = [3]string{
	limitRefused:     " connection limit reached; closing new connection (no idle or slow connection to close)",
	limitEvictedIdle: " connection limit reached; closing the longest idle connection",
	limitEvictedSlow: " connection limit reached; closing the connection whose request is slowest to arrive",
}

// note records an action of MaxConns on behalf of the new connection from
// remote (victim is the closed connection's remote, if any) and logs it
// unless its window is open.
func (l *limitLog) note(log *slog.Logger, a limitAction, remote, victim string, maxConns int) {
	l.mu.Lock()
	if l.open[a] {
		l.suppressed[a]++
		l.mu.Unlock()
		return
	}
	l.open[a] = true
	l.mu.Unlock()
	level := slog.LevelWarn
	if a == limitEvictedIdle {
		level = slog.LevelInfo // routine when Postfix runs more processes than MaxConns
	}
	attrs := []any{"remote", remote, "max_conns", maxConns}
	if victim != "" {
		attrs = append(attrs, "closed", victim)
	}
	log.Log(context.Background(), level, l.name+":"+limitMessages[a], attrs...)
	l.arm(log, a, level, maxConns)
}

func (l *limitLog) arm(log *slog.Logger, a limitAction, level slog.Level, maxConns int) {
	every := l.every
	if every <= 0 {
		every = limitLogEvery
	}
	time.AfterFunc(every, func() {
		l.mu.Lock()
		n := l.suppressed[a]
		l.suppressed[a] = 0
		if n == 0 {
			l.open[a] = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		log.Log(context.Background(), level, l.name+":"+limitMessages[a]+" (repeated)",
			"times", n, "within", every, "max_conns", maxConns)
		l.arm(log, a, level, maxConns)
	})
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
		victim, why = s.evictLocked(c.slot, mono.Now())
		if victim == nil {
			s.mu.Unlock()
			s.limitLog.note(s.Logger, why, c.remote, "", s.MaxConns)
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
		s.limitLog.note(s.Logger, why, c.remote, victim.remote, s.MaxConns)
	}
	return true
}

// evictLocked picks the connection of slot that makes room for a new one
// and marks it closed: the one idle for longest, else the one whose
// request has been in progress for longest, if longer than SlowRequest.
// It returns nil and limitRefused when there is none. now is the time
// since mono's base.
//
// Every connection's state is read with one atomic load and claimed with a
// compare-and-swap on that value; the sequence number in the state makes a
// claim fail when the connection has moved on since (no ABA). A connection
// inside the Handler is never chosen: the watchdog bounds it.
func (s *Server) evictLocked(slot *listenerSlot, now time.Duration) (*conn, limitAction) {
	slow := s.SlowRequest
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
