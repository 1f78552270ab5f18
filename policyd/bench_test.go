package policyd

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/memconn"
)

// BenchmarkServeLoop measures the server's own work per request (reading
// and decoding a recorded Postfix request, the Handler call under its
// timeout, writing the reply) on an in-memory connection: what the server
// adds to the system calls.
func BenchmarkServeLoop(b *testing.B) { serveLoop(b, nil) }

// BenchmarkServeLoopObserve is BenchmarkServeLoop with an Observe hook
// (Server.Observe): the difference is what reporting a reply costs.
func BenchmarkServeLoopObserve(b *testing.B) {
	var n int
	serveLoop(b, func(_ *Request, a Action, failed bool, _ time.Duration) {
		if a == "DUNNO" && !failed {
			n++
		}
	})
	if n != b.N {
		b.Fatalf("observed %d DUNNO replies, want %d", n, b.N)
	}
}

// serveLoop runs BenchmarkServeLoop with the Observe hook given.
func serveLoop(b *testing.B, observe func(*Request, Action, bool, time.Duration)) {
	conn := memconn.New(fixture(b, "postfix37-rcpt-tls13.txt"), b.N)
	l := memconn.NewListener(conn)
	s := &Server{Handler: HandlerFunc(dunno), Observe: observe, Logger: slog.New(slog.DiscardHandler)}
	b.ReportAllocs()
	b.ResetTimer()
	go func() { _ = s.Serve(l) }()
	<-conn.Closed()
	b.StopTimer()
	if err := s.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
}
