package web

import (
	"context"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// Reply is what the daemon pays per request: the server's Observe hook
// (SocketmapReply, PolicydReply), which reads no clock; Bare is the
// Handler alone, for scale.
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
	b.Run("Reply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.PolicydReply(req, "DUNNO", false, 20*time.Microsecond)
		}
	})
}
