package socketmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/connserver"
)

// plainListener hands out TCP connections as a type the server does not
// know, so that it reads and writes them through net.Conn, not in raw mode.
type plainListener struct{ net.Listener }

type plainConn struct{ *net.TCPConn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c.(*net.TCPConn)}, nil
}

// transports are the ways a connection is served: TCP in raw mode on
// Linux, TCP through net.Conn, and a Unix socket (through net.Conn).
var transports = []struct {
	name    string
	network string
	plain   bool
}{
	{"tcp", "tcp", false},
	{"tcp via net.Conn", "tcp", true},
	{"unix", "unix", false},
}

// serveTransport starts s on a loopback listener of the transport.
func serveTransport(t *testing.T, network string, plain bool, s *Server) string {
	t.Helper()
	if !plain {
		return startOn(t, network, s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveOn(t, s, plainListener{l})
	return addr
}

// rawConns counts the server's connections in raw mode and in all.
func rawConns(s *Server) (raw, all int) {
	st := s.server().Stats()
	return st.Raw, st.All
}

// TestServerTransports runs what a client may do over each transport:
// raw mode and net.Conn must answer alike, including where raw mode hands
// a step over to blocking I/O (a request larger than the read buffer,
// replies the client is slow to take).
func TestServerTransports(t *testing.T) {
	echo := func(key string) string { return "OK m|" + key }
	tests := []struct {
		name string
		run  func(t *testing.T, c *client)
	}{
		{"one request at a time", func(t *testing.T, c *client) {
			for i := range 100 {
				key := fmt.Sprintf("echo %d", i)
				if got := c.lookup("m", key); got != echo(key) {
					t.Fatalf("got %q, want %q", got, echo(key))
				}
			}
		}},
		{"pipelined requests split at every size", func(t *testing.T, c *client) {
			var req []byte
			const n = 300
			for i := range n {
				req = AppendNetstring(req, fmt.Sprintf("m echo %d", i))
			}
			go func() {
				for size := 1; len(req) > 0; size = size%97 + 1 {
					size := min(size, len(req))
					if _, err := c.nc.Write(req[:size]); err != nil {
						return
					}
					req = req[size:]
					if size%13 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			for i := range n {
				if got, want := c.reply(), echo(fmt.Sprintf("echo %d", i)); got != want {
					t.Fatalf("reply %d: %q, want %q", i, got, want)
				}
			}
		}},
		{"request larger than the read buffer", func(t *testing.T, c *client) {
			key := "echo " + strings.Repeat("k", 2*connserver.ReadBufSize)
			if got := c.lookup("m", key); got != echo(key) {
				t.Fatalf("got %d bytes, want %d", len(got), len(echo(key)))
			}
			if got := c.lookup("m", "echo after"); got != echo("echo after") {
				t.Fatalf("next request: %q", got)
			}
		}},
		{"request dribbled byte by byte", func(t *testing.T, c *client) {
			for _, b := range AppendNetstring(nil, "m echo slow") {
				c.send(string(b))
				time.Sleep(2 * time.Millisecond)
			}
			if got := c.reply(); got != echo("echo slow") {
				t.Fatalf("got %q", got)
			}
		}},
		{"replies taken late", func(t *testing.T, c *client) {
			// 8 MB of replies: more than the socket buffers
			// hold, so that writing them blocks.
			key := "echo " + strings.Repeat("r", 4000)
			const n = 2000
			req := AppendNetstring(nil, "m "+key)
			go func() {
				for range n {
					if _, err := c.nc.Write(req); err != nil {
						return
					}
				}
			}()
			time.Sleep(200 * time.Millisecond)
			for i := range n {
				if got := c.reply(); got != echo(key) {
					t.Fatalf("reply %d: %.40q…", i, got)
				}
			}
		}},
		{"request then half-close", func(t *testing.T, c *client) {
			c.send(string(AppendNetstring(nil, "m echo last")))
			if err := c.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := c.reply(); got != echo("echo last") {
				t.Fatalf("got %q", got)
			}
			c.expectClosed(3 * time.Second)
		}},
		{"end of stream inside a request", func(t *testing.T, c *client) {
			c.send("23:tls_policy bank")
			if err := c.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := c.reply(); got != "PERM bad request" {
				t.Fatalf("got %q", got)
			}
			c.expectClosed(3 * time.Second)
		}},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					s := &Server{Handler: &fakeHandler{}}
					addr := serveTransport(t, tr.network, tr.plain, s)
					c := dial(t, tr.network, addr)
					tt.run(t, c)
					raw, all := rawConns(s)
					wantRaw := runtime.GOOS == "linux" && tr.network == "tcp" && !tr.plain
					if all > 0 && (raw > 0) != wantRaw {
						t.Errorf("%d of %d connections in raw mode, want raw mode %v", raw, all, wantRaw)
					}
				})
			}
		})
	}
}

// TestServerRawShutdown: Shutdown and MaxConns end a connection in raw
// mode with shutdown(2), and its goroutine must notice at once, idle or
// halfway through a request.
func TestServerRawShutdown(t *testing.T) {
	s := &Server{Handler: &fakeHandler{}, MaxConns: 1, SlowRequest: 50 * time.Millisecond}
	addr, _ := testServer(t, s)

	slow := dial(t, "tcp", addr)
	slow.send("23:tls_policy bank") // and no more
	waitFor(t, "request to start", func() bool { _, active, _ := phaseCounts(s); return active == 1 })
	time.Sleep(100 * time.Millisecond)
	// The newcomer takes the slow connection's place.
	idle := dial(t, "tcp", addr)
	if got := idle.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Fatalf("got %q", got)
	}
	slow.expectClosed(3 * time.Second)

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(t.Context()) }()
	idle.expectClosed(3 * time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// echoHandler answers "OK <map>|<key>".
var echoHandler = HandlerFunc(func(_ context.Context, mapName, key string) (Reply, error) {
	return Reply{Status: StatusOK, Data: mapName + "|" + key}, nil
})

// wantStream is what the server must send for the request stream data
// followed by EOF: the replies of echoHandler, a PERM reply for a request
// without a map name, and a PERM reply, and no more, at a malformed or
// truncated netstring.
func wantStream(data []byte) []byte {
	var out []byte
	d := NewDecoder(bufio.NewReader(bytes.NewReader(data)), DefaultMaxRequestSize)
	for {
		p, err := d.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			return AppendReply(out, Reply{Status: StatusPerm, Data: "bad request"})
		}
		name, key, err := parseRequest(p)
		if err != nil {
			out = AppendReply(out, Reply{Status: StatusPerm, Data: "bad request"})
			continue
		}
		r, _ := echoHandler(context.Background(), name, key)
		out = AppendReply(out, r)
	}
}

// FuzzServerStream sends a request stream to a server in raw mode (TCP on
// Linux) in pieces of the sizes cuts gives, then half-closes, and checks
// that the server's answer is what the Decoder makes of the whole stream:
// raw mode's reading of partial input must not change a byte.
func FuzzServerStream(f *testing.F) {
	for _, s := range []string{
		"23:tls_policy bank.example,",
		"3:m a,3:m b,5:m c d,",
		"4:oops,3:m a,",
		"23:tls_policy bank",
		"023:tls_policy bank.example,",
		"3:m a,x",
		"10241:",
		"0:,",
	} {
		f.Add([]byte(s), []byte{1, 2, 3})
	}
	f.Add(AppendNetstring(nil, "m "+strings.Repeat("k", 5000)), []byte{200, 7})
	s := &Server{Handler: echoHandler, Logger: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go s.Serve(l)
	f.Cleanup(func() { s.Shutdown(context.Background()) })
	addr := l.Addr().String()

	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		go func() {
			rest := data
			for i := 0; len(rest) > 0; i++ {
				n := len(rest)
				if len(cuts) > 0 {
					n = min(n, int(cuts[i%len(cuts)])+1)
				}
				if _, err := nc.Write(rest[:n]); err != nil {
					return
				}
				rest = rest[n:]
			}
			nc.(*net.TCPConn).CloseWrite()
		}()
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(nc)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading replies: %v", err)
		}
		if want := wantStream(data); !bytes.Equal(got, want) {
			t.Fatalf("replies\n%q\nwant\n%q", got, want)
		}
	})
}

// phaseCounts returns how many of s's connections are in each phase.
func phaseCounts(s *Server) (idle, active, handler int) {
	st := s.server().Stats()
	return st.Idle, st.Active, st.Handler
}
