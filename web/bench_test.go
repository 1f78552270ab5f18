package web

import (
	"context"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// The instrumentation wraps every request: its cost is the difference
// between the Wrapped and Bare benchmarks.
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
	w := NewMetrics().Socketmap(h)
	b.Run("Wrapped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Lookup(ctx, "tls_policy", "bank.example")
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
	w := NewMetrics().Policyd(h)
	b.Run("Wrapped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Check(ctx, req)
		}
	})
}
