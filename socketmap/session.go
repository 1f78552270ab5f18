package socketmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// session is one connection's socketmap side for internal/connserver: the
// netstring decoder and the lookup being answered.
type session struct {
	h       Handler
	log     *slog.Logger
	observe func(mapName string, status Status, d time.Duration)
	remote  string
	d       *Decoder

	// The request Read read: its map and key, or why it has none.
	mapName, key string
	bad          error
	mapStr       string // previous map name, reused while it repeats
	reply        Reply  // Call's answer
}

// Complete reports whether a whole netstring (or a malformed one) is
// buffered.
func (s *session) Complete() bool { return s.d.Buffered() }

// Read reads the next request netstring and splits it into map and key.
// A payload without the separating space is no read error: the framing is
// intact, so it is answered PERM and the connection goes on.
func (s *session) Read() error {
	payload, err := s.d.Next()
	if err != nil {
		return err
	}
	name, key, err := splitRequest(payload)
	if err != nil {
		s.bad = err
		return nil
	}
	s.bad = nil
	if string(name) != s.mapStr {
		s.mapStr = string(name) // a connection normally asks one map over and over
	}
	s.mapName, s.key = s.mapStr, string(key)
	return nil
}

// Call looks the key up. A Handler error, a panic, and a reply Postfix
// would not take are answered TEMP.
func (s *session) Call(ctx context.Context) {
	if s.bad != nil {
		return
	}
	reply, err := s.lookup(ctx)
	if err != nil {
		s.log.Warn("socketmap: lookup failed; answering TEMP",
			"remote", s.remote, "map", s.mapName, "key", s.key, "err", err)
		reply = Reply{Status: StatusTemp, Data: err.Error()}
	}
	if n := normalize(reply); n.Status != reply.Status {
		s.log.Warn("socketmap: handler reply cannot be sent as is; answering TEMP",
			"remote", s.remote, "map", s.mapName, "key", s.key, "reason", n.Data)
		reply = n
	}
	s.reply = reply
}

// lookup runs the Handler, turning a panic into TEMP.
func (s *session) lookup(ctx context.Context) (reply Reply, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("socketmap: handler panic; answering TEMP",
				"remote", s.remote, "map", s.mapName, "key", s.key,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			reply, err = Reply{Status: StatusTemp, Data: "internal error"}, nil
		}
	}()
	return s.h.Lookup(ctx, s.mapName, s.key)
}

// Append appends Call's reply, or PERM for a request without a map name.
func (s *session) Append(out []byte, d time.Duration) []byte {
	if s.bad != nil {
		s.log.Warn("socketmap: bad request", "remote", s.remote, "err", s.bad)
		s.observeReply("", StatusPerm, 0)
		return AppendReply(out, Reply{Status: StatusPerm, Data: "bad request"})
	}
	s.observeReply(s.mapName, s.reply.Status, d)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.LogAttrs(context.Background(), slog.LevelDebug, "socketmap: lookup",
			slog.String("remote", s.remote), slog.String("map", s.mapName),
			slog.String("key", s.key), slog.String("status", s.reply.Status.String()))
	}
	return AppendReply(out, s.reply)
}

// Timeout answers "TEMP timeout" for a lookup that overran RequestTimeout.
func (s *session) Timeout(out []byte, d time.Duration) []byte {
	s.log.Warn("socketmap: lookup exceeded request timeout; answering TEMP and closing connection",
		"remote", s.remote, "map", s.mapName, "key", s.key)
	s.observeReply(s.mapName, StatusTemp, d)
	return AppendReply(out, Reply{Status: StatusTemp, Data: "timeout"})
}

// Malformed answers "PERM bad request" to a malformed netstring: a
// netstring stream cannot be resynchronised, so the connection closes.
// Other read errors get no answer.
func (s *session) Malformed(out []byte, err error) []byte {
	if !errors.Is(err, ErrMalformed) {
		s.log.Debug("socketmap: read failed", "remote", s.remote, "err", err)
		return out
	}
	s.log.Warn("socketmap: malformed request; closing connection", "remote", s.remote, "err", err)
	s.observeReply("", StatusPerm, 0)
	return AppendReply(out, Reply{Status: StatusPerm, Data: "bad request"})
}

// observeReply reports a reply to Server.Observe, if set.
func (s *session) observeReply(mapName string, st Status, d time.Duration) {
	if s.observe != nil {
		s.observe(mapName, st, d)
	}
}
