package policyd

import (
	"context"
	"log/slog"
	"sync"
	"time"
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
	every time.Duration // limitLogEvery if zero; tests shorten it

	mu         sync.Mutex
	open       [3]bool // by limitAction: a window is running
	suppressed [3]int  // by limitAction: events in the window, not logged
}

var limitMessages = [3]string{
	limitRefused:     "policyd: connection limit reached; closing new connection (no idle or slow connection to close)",
	limitEvictedIdle: "policyd: connection limit reached; closing the longest idle connection",
	limitEvictedSlow: "policyd: connection limit reached; closing the connection whose request is slowest to arrive",
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
	log.Log(context.Background(), level, limitMessages[a], attrs...)
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
		log.Log(context.Background(), level, limitMessages[a]+" (repeated)",
			"times", n, "within", every, "max_conns", maxConns)
		l.arm(log, a, level, maxConns)
	})
}
