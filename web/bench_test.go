package web

import (
	"context"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// Reply is what the daemon pays per request: the server's Observe hook
// (SocketmapReply, PolicydReply), which reads no clock. Wrapped is the
// Handler wrapper, less what the Handler itself costs (Bare): two clock
// readings more.
func BenchmarkSocketmap(b *testing.B) {
	h := socketmap.HandlerFunc(func(context.Context, string, string) (socketmap.Reply, error) {
		return socketmap.Reply{Status: socketmap.StatusOK, Data: "encrypt"}, nil
	})
	ctx := context.Background()
	b.Run("Bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Lookup(ctx, "tls_policy", "bank.example")
		}
	})
	m := NewMetrics()
	w := m.Socketmap(h)
	b.Run("Wrapped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Lookup(ctx, "tls_policy", "bank.example")
		}
	})
	b.Run("Reply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.SocketmapReply("tls_policy", socketmap.StatusOK, 20*time.Microsecond)
		}
	})
}

func BenchmarkPolicyd(b *testing.B) {
	h := policyd.HandlerFunc(func(context.Context, *policyd.Request) (policyd.Action, error) { return "DUNNO", nil })
	req := request("sender=a@bank.example", "encryption_protocol=TLSv1.3")
	ctx := context.Background()
	b.Run("Bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Check(ctx, req)
		}
	})
	m := NewMetrics()
	w := m.Policyd(h)
	b.Run("Wrapped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Check(ctx, req)
		}
	})
	b.Run("Reply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.PolicydReply(req, "DUNNO", false, 20*time.Microsecond)
		}
	})
}
