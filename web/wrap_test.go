package web

import (
	"context"

	"github.com/tlspolicyd/tlspolicyd/internal/mono"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// Socketmap returns h instrumented, as the servers' Observe hooks would
// count its replies, for tests that drive the Engine without a server.
func (m *Metrics) Socketmap(h socketmap.Handler) socketmap.Handler {
	return socketmap.HandlerFunc(func(ctx context.Context, mapName, key string) (socketmap.Reply, error) {
		start := mono.Now()
		r, err := h.Lookup(ctx, mapName, key)
		st := r.Status
		if err != nil {
			st = socketmap.StatusTemp // what the server answers
		}
		m.SocketmapReply(mapName, st, mono.Now()-start)
		return r, err
	})
}

// Policyd is Socketmap for policy requests.
func (m *Metrics) Policyd(h policyd.Handler) policyd.Handler {
	return policyd.HandlerFunc(func(ctx context.Context, req *policyd.Request) (policyd.Action, error) {
		start := mono.Now()
		a, err := h.Check(ctx, req)
		m.PolicydReply(req, a, err != nil, mono.Now()-start)
		return a, err
	})
}
