package main

import (
	"log/slog"
	"net"
	"syscall"
	"time"

	"golang.org/x/net/netutil"
)

// Bounds of the HTTP listener (status page, JSON API, /metrics,
// /healthz): a few browsers and a scraper, never hundreds of clients.
const (
	// httpMaxConns caps the HTTP connections open at once. At the cap
	// Accept waits: newcomers queue in the kernel's backlog, which costs
	// the daemon no descriptor, until a connection closes.
	httpMaxConns = 128
	// httpIdleTimeout closes a keep-alive HTTP connection idle this long.
	httpIdleTimeout = 30 * time.Second
	// fdReserve is what the daemon needs besides connections: the table
	// and its watcher, the probe cache, the event log, 32 prober sessions
	// with their DNS, the alert mail, stdio.
	fdReserve = 256
)

// raiseNofile raises the soft limit on open files to the hard limit, so
// that max_connections per lookup listener can be honoured (Debian's soft
// default is 1024), and returns the limit in force.
func raiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// httpConnLimit is the HTTP connection cap under an open-file limit of
// nofile when the lookup listeners may hold lookupConns connections: the
// HTTP listener never takes the descriptors they need. ok is false when
// nofile cannot hold lookupConns, fdReserve and a minimal HTTP cap (the
// lookup listeners' accept then fails, retried, before their cap).
func httpConnLimit(nofile uint64, lookupConns int) (n int, ok bool) {
	const minHTTP = 8
	free := int64(nofile) - int64(lookupConns) - fdReserve
	if free < minHTTP {
		return minHTTP, false
	}
	return int(min(free, httpMaxConns)), true
}

// limitHTTP bounds the HTTP listener's connections under the open-file
// limit nofile (0: unknown), keeping descriptors for the lookup listeners
// (see httpConnLimit), and logs the limits.
func limitHTTP(l net.Listener, nofile uint64, lookupConns int, log *slog.Logger) net.Listener {
	if nofile == 0 {
		return netutil.LimitListener(l, httpMaxConns)
	}
	n, ok := httpConnLimit(nofile, lookupConns)
	if !ok {
		log.Warn("open-file limit too low for max_connections: raise LimitNOFILE= (systemd) or ulimit -n, or lower max_connections",
			"nofile", nofile, "lookup_connections", lookupConns, "reserve", fdReserve)
	}
	log.Info("http connection limit", "max_connections", n, "idle_timeout", httpIdleTimeout, "nofile", nofile)
	return netutil.LimitListener(l, n)
}
