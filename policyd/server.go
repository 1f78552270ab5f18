package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/connserver"
)

// Defaults of the Server's zero fields: DeferText, and those of the
// connection server both protocols share.
const (
	DefaultDeferText      = "450 4.7.10 TLS policy service temporarily unavailable; try again later"
	DefaultReadTimeout    = connserver.DefaultReadTimeout
	DefaultIdleTimeout    = connserver.DefaultIdleTimeout
	DefaultRequestTimeout = connserver.DefaultRequestTimeout
	DefaultSlowRequest    = connserver.DefaultSlowRequest
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
	// ReadTimeout (default 10s) bounds a request from its first byte to
	// its last, and the taking of replies; IdleTimeout (5m) closes a
	// connection on which no request starts; RequestTimeout (5s) bounds
	// one Handler call: the Handler's context ends then, and if it has
	// not returned the client gets DeferText at once and the connection
	// is closed.
	ReadTimeout, IdleTimeout, RequestTimeout time.Duration
	// MaxConns (0: no cap) caps the connections from each listener;
	// at the cap a request arriving for longer than SlowRequest (1s) may
	// lose its connection to a newcomer. See the package doc.
	MaxConns    int
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
	// of the two the server takes anyway, when the request is complete
	// and when the Handler returns.
	Observe func(req *Request, action Action, failed bool, d time.Duration)

	once sync.Once
	srv  *connserver.Server
}

func (s *Server) deferAction() Action {
	if s.DeferText != "" {
		return Action(s.DeferText)
	}
	return DefaultDeferText
}

// server returns the connection server, made from s's fields on first use.
func (s *Server) server() *connserver.Server {
	s.once.Do(func() {
		log := s.Logger
		if log == nil {
			log = slog.Default()
		}
		deferAction := s.deferAction()
		s.srv = &connserver.Server{
			Name:        "policyd",
			ErrClosed:   ErrServerClosed,
			Logger:      log,
			ReadTimeout: s.ReadTimeout, IdleTimeout: s.IdleTimeout, RequestTimeout: s.RequestTimeout,
			MaxConns: s.MaxConns, SlowRequest: s.SlowRequest,
			NewSession: func(r *bufio.Reader, remote string) connserver.Session {
				return &session{h: s.Handler, log: log, observe: s.Observe, remote: remote,
					br: r, dec: NewDecoder(r), deferAction: deferAction}
			},
		}
	})
	return s.srv
}

// Serve accepts connections on l and serves each in its own goroutine
// until Shutdown, then returns ErrServerClosed. It closes l when it
// returns. Serve may be called for several listeners at once.
func (s *Server) Serve(l net.Listener) error {
	if s.Handler == nil {
		l.Close()
		return errors.New("policyd: Server.Handler is nil")
	}
	if a := s.deferAction(); !ValidAction(a) {
		l.Close()
		return fmt.Errorf("policyd: DeferText %.80q: %w", string(a), ErrInvalidAction)
	}
	return s.server().Serve(l)
}

// Shutdown stops the server: it closes the listeners and the idle
// connections at once, then waits for the connections busy with a request
// to send their reply and close. When ctx ends first, it closes those too
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.server().Shutdown(ctx)
}
