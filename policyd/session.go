package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// session is one connection's policy delegation side for
// internal/connserver: the decoder, the request (reused for every request,
// as the Handler's contract says) and the action decided.
type session struct {
	h           Handler
	log         *slog.Logger
	observe     func(req *Request, action Action, failed bool, d time.Duration)
	remote      string
	br          *bufio.Reader
	dec         *Decoder
	deferAction Action

	req    Request
	action Action // Call's answer
	failed bool   // action is deferAction because the Handler gave none
}

// Complete reports whether a whole request (up to its empty line) is in
// the read buffer. Postfix writes a request at once and waits for the
// reply, so a look at the last two bytes usually says it all; then
// "\n\n" before "\n\r\n", as Postfix ends its lines with "\n".
func (s *session) Complete() bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.br.Peek(n)
	return bytes.HasSuffix(b, []byte("\n\n")) || b[0] == '\n' || bytes.Contains(b, []byte("\n\n")) ||
		bytes.HasPrefix(b, []byte("\r\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// Read decodes the next request.
func (s *session) Read() error { return s.dec.Decode(&s.req) }

var errHandlerPanic = errors.New("policy handler panicked")

// Call asks the Handler. An error, a panic and an action that cannot be
// sent safely all become DeferText (fail closed).
func (s *session) Call(ctx context.Context) {
	req := &s.req
	action, err := s.check(ctx)
	s.failed = true
	switch {
	case errors.Is(err, errHandlerPanic):
		action = s.deferAction // logged by check
	case err != nil:
		s.log.Warn("policyd: handler failed; deferring", "remote", s.remote,
			"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", s.deferAction, "err", err)
		action = s.deferAction
	case !ValidAction(action):
		// A line break would inject attributes into the reply; an empty
		// action is a zero value returned by mistake. Both are bugs.
		s.log.Error("policyd: handler returned an invalid action; deferring", "remote", s.remote,
			"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", s.deferAction,
			"invalid_action", string(action))
		action = s.deferAction
	default:
		s.failed = false
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("policyd: request", "remote", s.remote,
				"sender", req.Get("sender"), "recipient", req.Get("recipient"), "action", action)
		}
	}
	s.action = action
}

// check runs the Handler, turning a panic into errHandlerPanic.
func (s *session) check(ctx context.Context) (action Action, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("policyd: handler panicked; deferring", "remote", s.remote,
				"sender", s.req.Get("sender"), "recipient", s.req.Get("recipient"), "action", s.deferAction,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			action, err = "", fmt.Errorf("%w: %v", errHandlerPanic, p)
		}
	}()
	return s.h.Check(ctx, &s.req)
}

// Append appends Call's action.
func (s *session) Append(out []byte, d time.Duration) []byte {
	if s.observe != nil {
		s.observe(&s.req, s.action, s.failed, d)
	}
	out, _ = AppendAction(out, s.action) // valid: checked by Call
	return out
}

// Timeout answers DeferText for a Handler that overran RequestTimeout.
func (s *session) Timeout(out []byte, d time.Duration) []byte {
	req := &s.req
	s.log.Warn("policyd: handler exceeded the request timeout; deferring and closing connection",
		"remote", s.remote, "sender", req.Get("sender"), "recipient", req.Get("recipient"),
		"action", s.deferAction)
	if s.observe != nil {
		s.observe(req, s.deferAction, true, d)
	}
	out, _ = AppendAction(out, s.deferAction)
	return out
}

// Malformed logs a request that cannot be read; it gets no reply (the
// protocol has none) and the connection closes.
func (s *session) Malformed(out []byte, err error) []byte {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		s.log.Warn("policyd: bad request; closing connection", "remote", s.remote, "err", err)
	} else {
		s.log.Warn("policyd: reading request failed; closing connection", "remote", s.remote, "err", err)
	}
	return out
}
