package socketmap

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/connserver"
)

// Server defaults, those of the connection server both protocols share.
const (
	DefaultReadTimeout    = connserver.DefaultReadTimeout
	DefaultIdleTimeout    = connserver.DefaultIdleTimeout
	DefaultRequestTimeout = connserver.DefaultRequestTimeout
	DefaultSlowRequest    = connserver.DefaultSlowRequest
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

	// ReadTimeout, IdleTimeout and RequestTimeout bound the arrival of a
	// request from its first byte (and the taking of replies), a
	// connection's idleness, and one Handler call; zero means the
	// Default… value. A Handler that overruns RequestTimeout has its
	// context ended, and the client gets "TEMP timeout" at once and the
	// connection closes.
	ReadTimeout, IdleTimeout, RequestTimeout time.Duration
	// MaxRequestSize caps a request's payload in bytes (default
	// DefaultMaxRequestSize).
	MaxRequestSize int
	// MaxConns caps the connections from each listener (0: no cap);
	// SlowRequest (default DefaultSlowRequest) is how long a request may
	// be arriving before its connection may make room at the cap. See
	// Limits in the package doc.
	MaxConns    int
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
	// is the difference of the two the server takes anyway, when the
	// request is complete and when the Handler returns.
	Observe func(mapName string, status Status, d time.Duration)

	once sync.Once
	srv  *connserver.Server
}

// server returns the connection server, made from s's fields on first use.
func (s *Server) server() *connserver.Server {
	s.once.Do(func() {
		log := s.Logger
		if log == nil {
			log = slog.Default()
		}
		s.srv = &connserver.Server{
			Name:        "socketmap",
			ErrClosed:   ErrServerClosed,
			Logger:      log,
			ReadTimeout: s.ReadTimeout, IdleTimeout: s.IdleTimeout, RequestTimeout: s.RequestTimeout,
			MaxConns: s.MaxConns, SlowRequest: s.SlowRequest,
			NewSession: func(r *bufio.Reader, remote string) connserver.Session {
				return &session{h: s.Handler, log: log, observe: s.Observe, remote: remote, d: NewDecoder(r, s.MaxRequestSize)}
			},
		}
	})
	return s.srv
}

// Serve accepts connections on l and serves each in its own goroutine until
// Shutdown is called, then returns ErrServerClosed. Serve may be called for
// several listeners at once. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		l.Close()
		return errors.New("socketmap: Server.Handler is nil")
	}
	return s.server().Serve(l)
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns ErrServerClosed), closes idle connections at once, lets each busy
// connection finish the request it is answering and then closes it, and
// waits for all connections to be gone. If ctx ends first, Shutdown closes
// the remaining connections, cancels the contexts of running lookups and
// returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	return s.server().Shutdown(ctx)
}
