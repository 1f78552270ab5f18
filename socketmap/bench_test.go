package socketmap

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/memconn"
)

// BenchmarkDecode measures parsing buffered request netstrings.
func BenchmarkDecode(b *testing.B) {
	one := AppendNetstring(nil, "tls_policy mail.bank.example")
	stream := bytes.Repeat(one, 1000)
	r := bytes.NewReader(stream)
	br := bufio.NewReaderSize(r, 4096)
	d := NewDecoder(br, 0)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Next(); err != nil {
			r.Reset(stream)
			br.Reset(r)
			if _, err := d.Next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkParseRequest measures splitting a payload into map and key
// strings.
func BenchmarkParseRequest(b *testing.B) {
	p := []byte("tls_policy mail.bank.example")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseRequest(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendReply measures encoding a typical OK reply.
func BenchmarkAppendReply(b *testing.B) {
	buf := make([]byte, 0, 128)
	r := Reply{Status: StatusOK, Data: "secure match=nexthop:dot-nexthop"}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendReply(buf[:0], r)
	}
}

var benchReply = Reply{Status: StatusOK, Data: "encrypt"}

// benchServer starts a server with a trivial handler and no logging.
func benchServer(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{
		Handler: HandlerFunc(func(context.Context, string, string) (Reply, error) { return benchReply, nil }),
		Logger:  slog.New(slog.DiscardHandler),
	}
	go s.Serve(l)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return l.Addr().String()
}

// roundTrip sends req and reads a reply of exactly len(buf) bytes, as
// Postfix does: one outstanding request per connection.
func roundTrip(b *testing.B, nc net.Conn, req, buf []byte) {
	if _, err := nc.Write(req); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(nc, buf); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRequestRoundTrip measures one request and its reply over a
// loopback TCP connection with a trivial handler (client and server
// allocations together). The Parallel variant keeps one connection per
// goroutine, like a pool of Postfix smtp processes.
func BenchmarkRequestRoundTrip(b *testing.B) {
	addr := benchServer(b)
	req := AppendNetstring(nil, "tls_policy mail.bank.example")
	want := AppendReply(nil, benchReply)

	b.Run("Serial", func(b *testing.B) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		buf := make([]byte, len(want))
		roundTrip(b, nc, req, buf)
		if !bytes.Equal(buf, want) {
			b.Fatalf("reply %q, want %q", buf, want)
		}
		b.ReportAllocs()
		for b.Loop() {
			roundTrip(b, nc, req, buf)
		}
	})

	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer nc.Close()
			buf := make([]byte, len(want))
			for pb.Next() {
				roundTrip(b, nc, req, buf)
			}
		})
	})

	b.Run("Pipelined100", func(b *testing.B) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		batch := bytes.Repeat(req, 100)
		buf := make([]byte, 100*len(want))
		b.ReportAllocs()
		for b.Loop() {
			roundTrip(b, nc, batch, buf)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(100*b.N), "ns/request")
	})
}

// BenchmarkServeLoop measures the server's own work per request (reading
// and parsing the request, the Handler call under its timeout, encoding
// and flushing the reply) on an in-memory connection that answers each
// read with one request, as a client waiting for each reply does: no
// system calls, so what remains is what the server adds to them.
func BenchmarkServeLoop(b *testing.B) { serveLoop(b, nil) }

// BenchmarkServeLoopObserve is BenchmarkServeLoop with an Observe hook
// (Server.Observe): the difference is what reporting a reply costs.
func BenchmarkServeLoopObserve(b *testing.B) {
	var n int
	serveLoop(b, func(_ string, st Status, _ time.Duration) {
		if st == StatusOK {
			n++
		}
	})
	if n != b.N {
		b.Fatalf("observed %d OK replies, want %d", n, b.N)
	}
}

// serveLoop runs BenchmarkServeLoop with the Observe hook given.
func serveLoop(b *testing.B, observe func(string, Status, time.Duration)) {
	b.ReportAllocs()
	conn := memconn.New(AppendNetstring(nil, "tls_policy mail.bank.example"), b.N)
	l := memconn.NewListener(conn)
	s := &Server{
		Handler: HandlerFunc(func(context.Context, string, string) (Reply, error) { return benchReply, nil }),
		Observe: observe,
		Logger:  slog.New(slog.DiscardHandler),
	}
	b.ResetTimer()
	go s.Serve(l)
	<-conn.Closed()
	b.StopTimer()
	if err := s.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
}
