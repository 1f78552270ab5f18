package socketmap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/listen"
)

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// testServer runs s on a loopback listener and shuts it down at cleanup. It
// gives s a debug-level logger writing to the returned buffer unless s has
// one.
func testServer(t *testing.T, s *Server) (addr string, logs *logBuffer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, l)
}

func serveOn(t *testing.T, s *Server, l net.Listener) (string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return l.Addr().String(), logs
}

// client is a test connection.
type client struct {
	t  *testing.T
	nc net.Conn
	d  *Decoder
}

func dial(t *testing.T, network, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, d: NewDecoder(bufio.NewReader(nc), MaxReplySize)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one reply netstring, waiting at most 5 s.
func (c *client) reply() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := c.d.Next()
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return string(p)
}

// lookup sends "<map> <key>" and returns the reply payload.
func (c *client) lookup(mapName, key string) string {
	c.t.Helper()
	c.send(string(AppendNetstring(nil, mapName+" "+key)))
	return c.reply()
}

// expectClosed asserts that the server closes the connection within wait
// without sending anything more.
func (c *client) expectClosed(wait time.Duration) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(wait))
	p, err := c.d.Next()
	switch {
	case err == nil:
		c.t.Fatalf("got %q, want the connection closed", p)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Fatalf("connection still open after %v", wait)
	case err != io.EOF && !errors.Is(err, syscall.ECONNRESET):
		c.t.Fatalf("read: %v, want EOF", err)
	}
}

// fakeHandler answers from a table keyed by the request key and records the
// requests it saw.
type fakeHandler struct {
	mu   sync.Mutex
	seen []string // "map key"
}

func (f *fakeHandler) Lookup(ctx context.Context, mapName, key string) (Reply, error) {
	f.mu.Lock()
	f.seen = append(f.seen, mapName+" "+key)
	f.mu.Unlock()
	switch key {
	case "bank.example", "UPPER.Example", "":
		return Reply{Status: StatusOK, Data: "secure match=nexthop"}, nil
	case "none.example":
		return Reply{Status: StatusNotFound}, nil
	case "temp.example":
		return Reply{Status: StatusTemp, Data: "store not loaded"}, nil
	case "timeout.example":
		return Reply{Status: StatusTimeout, Data: "probe pending"}, nil
	case "perm.example":
		return Reply{Status: StatusPerm, Data: "unknown map"}, nil
	case "err.example":
		return Reply{}, fmt.Errorf("resolve %s: %w", key, errors.New("store unavailable"))
	case "empty.example":
		return Reply{Status: StatusOK}, nil
	case "huge.example":
		return Reply{Status: StatusOK, Data: strings.Repeat("x", MaxReplySize)}, nil
	case "big.example":
		return Reply{Status: StatusOK, Data: strings.Repeat("x", MaxReplySize-3)}, nil
	case "odd.example":
		return Reply{Status: Status(99), Data: "what"}, nil
	case "boom.example":
		panic("handler bug")
	}
	if strings.HasPrefix(key, "echo ") {
		return Reply{Status: StatusOK, Data: mapName + "|" + key}, nil
	}
	return Reply{Status: StatusNotFound}, nil
}

func (f *fakeHandler) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// TestServerReplies checks every reply kind byte for byte, on a fresh
// connection each.
func TestServerReplies(t *testing.T) {
	h := &fakeHandler{}
	addr, _ := testServer(t, &Server{Handler: h})
	tests := []struct {
		name, request, want string
	}{
		{"ok", "23:tls_policy bank.example,", "23:OK secure match=nexthop,"},
		{"case kept", "24:tls_policy UPPER.Example,", "23:OK secure match=nexthop,"},
		{"null sender empty key", "17:sender_transport ,", "23:OK secure match=nexthop,"},
		{"notfound", "23:tls_policy none.example,", "9:NOTFOUND ,"},
		{"temp", "23:tls_policy temp.example,", "21:TEMP store not loaded,"},
		{"timeout", "26:tls_policy timeout.example,", "21:TIMEOUT probe pending,"},
		{"perm", "23:tls_policy perm.example,", "16:PERM unknown map,"},
		{"handler error", "22:tls_policy err.example,", "43:TEMP resolve err.example: store unavailable,"},
		{"empty ok fails closed", "24:tls_policy empty.example,", "17:TEMP empty result,"},
		{"reply over cap fails closed", "23:tls_policy huge.example,", "19:TEMP reply too long,"},
		{"reply at cap", "22:tls_policy big.example,", fmt.Sprintf("%d:OK %s,", MaxReplySize, strings.Repeat("x", MaxReplySize-3))},
		{"unknown status", "22:tls_policy odd.example,", "9:TEMP what,"},
		{"panic", "23:tls_policy boom.example,", "19:TEMP internal error,"},
		{"no space", "10:tls_policy,", "16:PERM bad request,"},
		{"empty map name", "13: bank.example,", "16:PERM bad request,"},
		{"key with spaces", "18:Other_Map echo a b,", "21:OK Other_Map|echo a b,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, "tcp", addr)
			c.send(tt.request)
			got := make([]byte, len(tt.want))
			c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c.nc, got); err != nil {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			if string(got) != tt.want {
				t.Fatalf("reply %.60q, want %.60q", got, tt.want)
			}
			// The connection stays usable after every kind of reply.
			if r := c.lookup("tls_policy", "none.example"); r != "NOTFOUND " {
				t.Errorf("next reply %q, want NOTFOUND", r)
			}
		})
	}
	seen := strings.Join(h.requests(), "\n")
	for _, want := range []string{"tls_policy UPPER.Example", "sender_transport ", "Other_Map echo a b"} {
		if !strings.Contains(seen, want+"\n") {
			t.Errorf("handler never saw %q", want)
		}
	}
}

func TestServerLogsRequests(t *testing.T) {
	addr, logs := testServer(t, &Server{Handler: &fakeHandler{}})
	c := dial(t, "tcp", addr)
	c.lookup("tls_policy", "bank.example")
	c.lookup("tls_policy", "err.example")
	c.lookup("tls_policy", "boom.example")
	waitFor(t, "log records", func() bool { return strings.Count(logs.String(), `msg="socketmap: lookup" `) == 3 })
	out := logs.String()
	for _, want := range []string{
		"level=DEBUG msg=\"socketmap: lookup\" remote=" + c.nc.LocalAddr().String() + " map=tls_policy key=bank.example status=OK",
		"level=WARN msg=\"socketmap: lookup failed; answering TEMP\"",
		"err=\"resolve err.example: store unavailable\"",
		"level=ERROR msg=\"socketmap: handler panic; answering TEMP\"",
		"panic=\"handler bug\"",
		"goroutine ", // the stack
		"key=boom.example status=TEMP",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestServerManyRequestsOneConnection(t *testing.T) {
	h := &fakeHandler{}
	addr, _ := testServer(t, &Server{Handler: h})
	c := dial(t, "tcp", addr)
	for i := range 200 {
		key := fmt.Sprintf("echo %d", i)
		if got, want := c.lookup("tls_policy", key), "OK tls_policy|"+key; got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
	}
}

func TestServerPipelined(t *testing.T) {
	h := &fakeHandler{}
	addr, _ := testServer(t, &Server{Handler: h})
	c := dial(t, "tcp", addr)
	var req []byte
	const n = 500
	for i := range n {
		req = AppendNetstring(req, fmt.Sprintf("m echo %d", i))
	}
	go c.nc.Write(req) // the server may answer before all is written
	for i := range n {
		if got, want := c.reply(), fmt.Sprintf("OK m|echo %d", i); got != want {
			t.Fatalf("reply %d: %q, want %q", i, got, want)
		}
	}
}

// TestServerHalfClose is what Exim's ${readsocket} does: write one request,
// shut down the write side, read until the server closes.
func TestServerHalfClose(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := startOn(t, network, &Server{Handler: &fakeHandler{}})
			c := dial(t, network, addr)
			c.send("23:tls_policy bank.example,")
			if err := c.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			all, err := io.ReadAll(c.nc)
			if err != nil {
				t.Fatal(err)
			}
			if string(all) != "23:OK secure match=nexthop," {
				t.Errorf("got %q", all)
			}
		})
	}
}

// startOn starts s on a loopback TCP or unix socket listener.
func startOn(t *testing.T, network string, s *Server) string {
	t.Helper()
	if network == "tcp" {
		addr, _ := testServer(t, s)
		return addr
	}
	path := filepath.Join(shortTempDir(t), "s.sock")
	l, err := listen.Listen("unix:"+path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, s, l)
	return path
}

// shortTempDir returns a temporary directory with a path short enough for
// a unix socket (sun_path is 108 bytes; t.TempDir can exceed it).
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestServerUnixSocket(t *testing.T) {
	h := &fakeHandler{}
	path := startOn(t, "unix", &Server{Handler: h})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket with 0660", fi.Mode())
	}
	c := dial(t, "unix", path)
	for _, key := range []string{"bank.example", "none.example", "temp.example"} {
		c.lookup("tls_policy", key)
	}
	if got := c.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Errorf("got %q", got)
	}
	if n := len(h.requests()); n != 4 {
		t.Errorf("handler saw %d requests, want 4", n)
	}
}

// TestServerMalformed sends broken netstrings: the server must answer PERM
// bad request and close, without calling the handler and without waiting
// for (or reading into memory) an announced oversize payload.
func TestServerMalformed(t *testing.T) {
	const bad = "16:PERM bad request,"
	tests := []struct {
		name      string
		send      string
		streamMB  bool   // keep sending payload after the header
		wantFirst string // a reply expected before the error reply
	}{
		{name: "leading zero", send: "023:tls_policy bank.example,"},
		{name: "non-digit", send: "x3:tls_policy bank.example,"},
		{name: "negative", send: "-1:,"},
		{name: "overflow", send: "99999999999999999999999999:"},
		{name: "oversize announced, nothing sent", send: "10241:"},
		{name: "oversize announced, payload streamed", send: "10241:", streamMB: true},
		{name: "huge announced", send: "4000000000:"},
		{name: "missing comma", send: "23:tls_policy bank.example;"},
		{name: "missing colon", send: "23;tls_policy bank.example,"},
		{name: "length too short", send: "5:tls_policy bank.example,"},
		{name: "after a good request", send: "23:tls_policy bank.example,05:", wantFirst: "OK secure match=nexthop"},
		{name: "truncated then half-close", send: "23:tls_policy bank"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHandler{}
			// A long ReadTimeout: a prompt reply proves the server
			// did not wait for the announced bytes.
			addr, logs := testServer(t, &Server{Handler: h, ReadTimeout: time.Minute})
			c := dial(t, "tcp", addr)
			c.send(tt.send)
			if tt.streamMB {
				go func() {
					chunk := bytes.Repeat([]byte("a"), 4096)
					for range 16 { // 64 KiB: more than the cap, less than the linger drain
						if _, err := c.nc.Write(chunk); err != nil {
							return
						}
					}
				}()
			}
			if strings.HasPrefix(tt.name, "truncated") {
				c.nc.(*net.TCPConn).CloseWrite()
			}
			if tt.wantFirst != "" {
				if got := c.reply(); got != tt.wantFirst {
					t.Fatalf("first reply %q, want %q", got, tt.wantFirst)
				}
			}
			start := time.Now()
			if got := c.reply(); got != strings.TrimSuffix(bad[3:], ",") {
				t.Fatalf("reply %q, want PERM bad request", got)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("error reply took %v", el)
			}
			c.expectClosed(3 * time.Second)
			if n := len(h.requests()); tt.wantFirst == "" && n != 0 {
				t.Errorf("handler called %d times", n)
			}
			waitFor(t, "warning", func() bool { return strings.Contains(logs.String(), "level=WARN msg=\"socketmap: malformed request") })
		})
	}
}

// TestServerBadRequestKeepsConnection: a well-framed request without a map
// name is answered PERM, but the stream is in sync, so the connection stays.
func TestServerBadRequestKeepsConnection(t *testing.T) {
	addr, _ := testServer(t, &Server{Handler: &fakeHandler{}})
	c := dial(t, "tcp", addr)
	c.send("4:oops,")
	if got := c.reply(); got != "PERM bad request" {
		t.Fatalf("got %q", got)
	}
	if got := c.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Fatalf("got %q", got)
	}
}

func TestServerRequestSizeCap(t *testing.T) {
	addr, _ := testServer(t, &Server{Handler: &fakeHandler{}, MaxRequestSize: 64})
	c := dial(t, "tcp", addr)
	if got := c.lookup("m", "echo "+strings.Repeat("k", 64-len("m echo "))); !strings.HasPrefix(got, "OK ") {
		t.Fatalf("request at cap: %q", got)
	}
	if got := c.lookup("m", "echo "+strings.Repeat("k", 65-len("m echo "))); got != "PERM bad request" {
		t.Fatalf("request over cap: %q", got)
	}
	c.expectClosed(3 * time.Second)
}

func TestServerPanicKeepsServing(t *testing.T) {
	addr, _ := testServer(t, &Server{Handler: &fakeHandler{}})
	a, b := dial(t, "tcp", addr), dial(t, "tcp", addr)
	if got := a.lookup("tls_policy", "boom.example"); got != "TEMP internal error" {
		t.Fatalf("panic reply %q", got)
	}
	if got := b.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Fatalf("other connection: %q", got)
	}
	if got := a.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Fatalf("same connection after panic: %q", got)
	}
	c := dial(t, "tcp", addr)
	if got := c.lookup("tls_policy", "none.example"); got != "NOTFOUND " {
		t.Fatalf("new connection: %q", got)
	}
}

// blockingHandler blocks on "hang.example" until release is closed,
// ignoring its context; other keys go to fakeHandler.
type blockingHandler struct {
	fakeHandler
	entered chan struct{}
	release chan struct{}
	ctxErr  atomic.Value // error seen by a context-honouring lookup
	dl      atomic.Int64 // time to deadline seen by the handler
}

func newBlocking(t *testing.T) *blockingHandler {
	h := &blockingHandler{entered: make(chan struct{}, 10), release: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
	return h
}

func (h *blockingHandler) Lookup(ctx context.Context, mapName, key string) (Reply, error) {
	switch key {
	case "hang.example":
		if dl, ok := ctx.Deadline(); ok {
			h.dl.Store(int64(time.Until(dl)))
		}
		h.entered <- struct{}{}
		<-h.release
		return Reply{Status: StatusOK, Data: "late"}, nil
	case "slow.example":
		h.entered <- struct{}{}
		<-h.release
		return Reply{Status: StatusOK, Data: "slow"}, nil
	case "ctx.example":
		<-ctx.Done()
		h.ctxErr.Store(ctx.Err())
		return Reply{}, ctx.Err()
	}
	return h.fakeHandler.Lookup(ctx, mapName, key)
}

func TestServerHangingHandler(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := newBlocking(t)
	addr, logs := testServer(t, &Server{Handler: h, RequestTimeout: timeout})
	c := dial(t, "tcp", addr)
	start := time.Now()
	if got := c.lookup("tls_policy", "hang.example"); got != "TEMP timeout" {
		t.Fatalf("reply %q, want TEMP timeout", got)
	}
	el := time.Since(start)
	if el < timeout || el > timeout+2*time.Second {
		t.Errorf("TEMP timeout after %v, want about %v", el, timeout)
	}
	if dl := time.Duration(h.dl.Load()); dl <= 0 || dl > timeout {
		t.Errorf("handler context deadline in %v, want within %v", dl, timeout)
	}
	// The stuck worker owns nothing any more: the connection is closed.
	c.expectClosed(3 * time.Second)
	// Others are served meanwhile, while the hung lookup still blocks.
	d := dial(t, "tcp", addr)
	if got := d.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
		t.Fatalf("other connection: %q", got)
	}
	if !strings.Contains(logs.String(), "lookup exceeded request timeout") {
		t.Error("no warning logged")
	}
}

// A hung lookup keeps its connection counted against MaxConns until the
// Handler returns: its goroutine and socket live on, so freeing the slot
// at the timeout let hung lookups pile up without bound. With every slot
// hung a newcomer is refused; once the Handler returns, slots free up.
func TestServerHungLookupsStayCounted(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newBlocking(t)
	srv := &Server{Handler: h, RequestTimeout: timeout, MaxConns: 2}
	addr, _ := testServer(t, srv)
	var hung []*client
	for range 2 {
		c := dial(t, "tcp", addr)
		if got := c.lookup("tls_policy", "hang.example"); got != "TEMP timeout" {
			t.Fatalf("reply %q, want TEMP timeout", got)
		}
		hung = append(hung, c)
	}
	for range 3 {
		dial(t, "tcp", addr).expectClosed(3 * time.Second) // refused: both slots hung
	}
	for _, c := range hung {
		c.nc.Close() // as Postfix does after TEMP
	}
	close(h.release)
	// Their goroutines end once the Handler returns: a newcomer is served.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(nc, "23:tls_policy bank.example,")
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		n, _ := io.ReadAtLeast(nc, buf, 1)
		nc.Close()
		if strings.Contains(string(buf[:n]), "OK secure match=nexthop") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot free 5 s after the hung lookups returned (last reply %q)", buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServerHangingHandlerOnBusyConnection checks the watchdog on a
// connection that has answered lookups before: its timer, armed by an
// earlier lookup, must neither cut a hanging lookup short nor miss it, be
// it armed but about to fire or fired and disarmed while the connection was
// between lookups.
func TestServerHangingHandlerOnBusyConnection(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name   string
		before func(c *client)
	}{
		{"timer armed by the previous lookup fires during this one", func(c *client) {
			c.lookup("tls_policy", "bank.example")
			time.Sleep(timeout - 100*time.Millisecond)
		}},
		{"timer fired and disarmed between lookups", func(c *client) {
			for range 7 {
				c.lookup("tls_policy", "bank.example")
				time.Sleep(timeout / 3)
			}
		}},
		{"back-to-back lookups for longer than the timeout", func(c *client) {
			for start := time.Now(); time.Since(start) < 2*timeout; {
				c.lookup("tls_policy", "bank.example")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newBlocking(t)
			addr, logs := testServer(t, &Server{Handler: h, RequestTimeout: timeout})
			c := dial(t, "tcp", addr)
			tt.before(c)
			start := time.Now()
			if got := c.lookup("tls_policy", "hang.example"); got != "TEMP timeout" {
				t.Fatalf("reply %q, want TEMP timeout", got)
			}
			if el := time.Since(start); el < timeout || el > timeout+2*time.Second {
				t.Errorf("TEMP timeout after %v, want about %v", el, timeout)
			}
			c.expectClosed(3 * time.Second)
			if n := strings.Count(logs.String(), "lookup exceeded request timeout"); n != 1 {
				t.Errorf("%d timeout warnings, want 1", n)
			}
		})
	}
}

func TestServerContextHonouringHandlerTimesOut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newBlocking(t)
	addr, _ := testServer(t, &Server{Handler: h, RequestTimeout: timeout})
	c := dial(t, "tcp", addr)
	if got := c.lookup("tls_policy", "ctx.example"); !strings.HasPrefix(got, "TEMP ") {
		t.Fatalf("reply %q, want TEMP", got)
	}
	waitFor(t, "handler to see its context end", func() bool { return h.ctxErr.Load() != nil })
	if err := h.ctxErr.Load().(error); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handler context error %v", err)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr, _ := testServer(t, &Server{Handler: &fakeHandler{}, IdleTimeout: idle})

	// Requests spaced closer than the idle timeout keep it open, even
	// though together they last longer.
	busy := dial(t, "tcp", addr)
	for range 6 {
		if got := busy.lookup("tls_policy", "bank.example"); got != "OK secure match=nexthop" {
			t.Fatalf("got %q", got)
		}
		time.Sleep(idle / 3)
	}

	c := dial(t, "tcp", addr)
	c.lookup("tls_policy", "bank.example")
	start := time.Now()
	c.expectClosed(5 * time.Second)
	if el := time.Since(start); el < idle-50*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout %v", el, idle)
	}
}

func TestServerReadTimeout(t *testing.T) {
	const rt = 300 * time.Millisecond
	addr, logs := testServer(t, &Server{Handler: &fakeHandler{}, ReadTimeout: rt})
	c := dial(t, "tcp", addr)
	c.send("23:tls_policy ban") // and nothing more
	start := time.Now()
	c.expectClosed(5 * time.Second)
	if el := time.Since(start); el < rt-50*time.Millisecond {
		t.Errorf("closed after %v, before the read timeout %v", el, rt)
	}
	waitFor(t, "warning", func() bool { return strings.Contains(logs.String(), "not complete within read timeout") })
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	s := &Server{Handler: &fakeHandler{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	var clients []*client
	for range 3 {
		c := dial(t, "tcp", l.Addr().String())
		c.lookup("tls_policy", "bank.example")
		clients = append(clients, c)
	}
	fresh := dial(t, "tcp", l.Addr().String()) // connected, never sent anything
	_ = fresh

	start := time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Shutdown took %v with only idle connections", el)
	}
	for _, c := range append(clients, fresh) {
		c.expectClosed(time.Second)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if nc, err := net.Dial("tcp", l.Addr().String()); err == nil {
		nc.Close()
		t.Error("listener still accepting")
	}
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownWaitsForBusyConnection(t *testing.T) {
	h := newBlocking(t)
	s := &Server{Handler: h, RequestTimeout: time.Minute}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	idle := dial(t, "tcp", l.Addr().String())
	idle.lookup("tls_policy", "bank.example")
	busy := dial(t, "tcp", l.Addr().String())
	busy.send(string(AppendNetstring(nil, "tls_policy slow.example")))
	<-h.entered

	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	idle.expectClosed(2 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a request was running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(h.release)
	if got := busy.reply(); got != "OK slow" {
		t.Fatalf("busy connection got %q", got)
	}
	busy.expectClosed(2 * time.Second)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the busy request finished")
	}
}

func TestShutdownDeadline(t *testing.T) {
	h := newBlocking(t)
	s := &Server{Handler: h, RequestTimeout: time.Minute}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	busy := dial(t, "tcp", l.Addr().String())
	busy.send(string(AppendNetstring(nil, "tls_policy hang.example")))
	<-h.entered
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	busy.expectClosed(2 * time.Second) // force-closed
}

// ctxHandler keeps each lookup's context for inspection and, for
// "wait.example", blocks until its context ends.
type ctxHandler struct {
	ctxs    chan context.Context
	entered chan struct{}
}

func (h *ctxHandler) Lookup(ctx context.Context, mapName, key string) (Reply, error) {
	h.ctxs <- ctx
	if key == "wait.example" {
		h.entered <- struct{}{}
		<-ctx.Done()
		return Reply{}, ctx.Err()
	}
	return Reply{Status: StatusOK, Data: "encrypt"}, nil
}

// TestServerHandlerContext: the Handler's context has the RequestTimeout
// deadline and is cancelled once the Handler has returned, so goroutines it
// started with it end too.
func TestServerHandlerContext(t *testing.T) {
	const timeout = 2 * time.Second
	h := &ctxHandler{ctxs: make(chan context.Context, 10), entered: make(chan struct{}, 1)}
	addr, _ := testServer(t, &Server{Handler: h, RequestTimeout: timeout})
	c := dial(t, "tcp", addr)
	before := time.Now()
	c.lookup("tls_policy", "bank.example")
	ctx := <-h.ctxs
	dl, ok := ctx.Deadline()
	if !ok || dl.Before(before.Add(timeout)) || dl.After(time.Now().Add(timeout)) {
		t.Errorf("deadline %v (ok %v), want %v after the request", dl, ok, timeout)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context still live after the reply")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err after reply = %v, want context.Canceled", ctx.Err())
	}
	// Each request gets a fresh context.
	c.lookup("tls_policy", "bank.example")
	if ctx2 := <-h.ctxs; ctx2 == ctx {
		t.Error("context reused across requests")
	}
}

// TestShutdownDeadlineCancelsLookups: when Shutdown gives up waiting, running
// lookups see their context cancelled.
func TestShutdownDeadlineCancelsLookups(t *testing.T) {
	h := &ctxHandler{ctxs: make(chan context.Context, 10), entered: make(chan struct{}, 1)}
	s := &Server{Handler: h, RequestTimeout: time.Minute}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	c := dial(t, "tcp", l.Addr().String())
	c.send(string(AppendNetstring(nil, "tls_policy wait.example")))
	<-h.entered
	ctx := <-h.ctxs
	sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("running lookup's context not cancelled")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", ctx.Err())
	}
	c.expectClosed(2 * time.Second)
}

// TestServerLargeReplyAfterIdle: a reply larger than the write buffer, sent
// on a connection idle for longer than ReadTimeout, must not trip over the
// write deadline set at the previous reply.
func TestServerLargeReplyAfterIdle(t *testing.T) {
	const rt = 100 * time.Millisecond
	addr, _ := testServer(t, &Server{Handler: &fakeHandler{}, ReadTimeout: rt})
	c := dial(t, "tcp", addr)
	c.lookup("tls_policy", "bank.example")
	time.Sleep(3 * rt)
	if got := c.lookup("tls_policy", "big.example"); len(got) != MaxReplySize {
		t.Fatalf("got %d bytes, want %d", len(got), MaxReplySize)
	}
	// Pipelined replies that overflow the write buffer, after idling.
	time.Sleep(3 * rt)
	var req []byte
	for range 300 {
		req = AppendNetstring(req, "tls_policy bank.example")
	}
	c.send(string(req))
	for i := range 300 {
		if got := c.reply(); got != "OK secure match=nexthop" {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
}
