package policyd

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
	"syscall"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/listen"
)

// logBuffer collects a Server's log for assertions.
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

type testServer struct {
	*Server
	addr   string
	log    *logBuffer
	served chan error
}

// startServer serves s on a fresh loopback port (or on l when given) and
// shuts it down when the test ends.
func startServer(t *testing.T, s *Server, l net.Listener) *testServer {
	t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ts := &testServer{Server: s, addr: l.Addr().String(), log: &logBuffer{}, served: make(chan error, 1)}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() { ts.served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		select {
		case err := <-ts.served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return ts
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, network, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (cl *client) send(s string) {
	cl.t.Helper()
	_ = cl.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("send: %v", err)
	}
}

// reply reads one reply ("action=…" and the empty line) and returns the
// action text.
func (cl *client) reply() string {
	cl.t.Helper()
	a, err := cl.readReply(5 * time.Second)
	if err != nil {
		cl.t.Fatalf("read reply: %v", err)
	}
	return a
}

func (cl *client) readReply(timeout time.Duration) (string, error) {
	_ = cl.c.SetReadDeadline(time.Now().Add(timeout))
	line, err := cl.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	empty, err := cl.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	a, ok := strings.CutPrefix(line, "action=")
	if !ok || empty != "\n" {
		return "", errors.New("malformed reply " + line + empty)
	}
	return strings.TrimSuffix(a, "\n"), nil
}

// expectClosed asserts that the server closes the connection without
// sending anything (more).
func (cl *client) expectClosed() {
	cl.t.Helper()
	_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(cl.br)
	if len(rest) > 0 {
		cl.t.Errorf("server sent %q, want nothing", rest)
	}
	// A server closing with unread input makes the kernel send a reset.
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		cl.t.Errorf("connection not closed by the server: %v", err)
	}
}

func dunno(context.Context, *Request) (Action, error) { return "DUNNO", nil }

// The recorded Postfix 3.7 requests reach the Handler with every attribute.
func TestServeFixtures(t *testing.T) {
	tests := []struct {
		file string
		want map[string]string
	}{
		{"postfix37-rcpt-plain.txt", map[string]string{"sender": "alice@bank.example",
			"recipient": "legal@ourcorp.example", "encryption_protocol": "", "encryption_keysize": "0"}},
		{"postfix37-rcpt-tls13.txt", map[string]string{"encryption_protocol": "TLSv1.3",
			"encryption_cipher": "TLS_AES_256_GCM_SHA384", "encryption_keysize": "256"}},
		{"postfix37-rcpt-tls12-client-cert.txt", map[string]string{"encryption_protocol": "TLSv1.2",
			"ccert_fingerprint": "21:C7:E4:04:AF:B2:95:05:4A:C0:0B:4C:2C:0E:48:3B:43:8B:97:C8:5E:09:B1:EB:EF:D5:79:8F:C4:8A:BC:B9",
			"ccert_subject":     ""}},
		{"postfix37-rcpt-null-sender.txt", map[string]string{"sender": "", "recipient": "postmaster@ourcorp.example",
			"protocol_state": "RCPT", "request": "smtpd_access_policy"}},
	}
	got := make(chan *Request, 1)
	ts := startServer(t, &Server{Handler: HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
		got <- NewRequest(r.Map()) // r is the server's once Check returns
		return "DUNNO", nil
	})}, nil)
	cl := dial(t, "tcp", ts.addr) // one connection for all, as Postfix does
	for _, tt := range tests {
		cl.send(string(fixture(t, tt.file)))
		if a := cl.reply(); a != "DUNNO" {
			t.Errorf("%s: action %q, want DUNNO", tt.file, a)
		}
		r := <-got
		if r.Len() != 29 {
			t.Errorf("%s: %d attributes, want 29", tt.file, r.Len())
		}
		for name, want := range tt.want {
			if v, ok := r.Lookup(name); !ok || v != want {
				t.Errorf("%s: %s = %q (present %v), want %q", tt.file, name, v, ok, want)
			}
		}
	}
}

// echoSender answers with a deferral naming the sender, so that replies
// can be matched to requests.
func echoSender(_ context.Context, r *Request) (Action, error) {
	return Action("450 4.7.10 sender " + r.Get("sender")), nil
}

func TestServeSeveralRequestsPerConnection(t *testing.T) {
	ts := startServer(t, &Server{Handler: HandlerFunc(echoSender)}, nil)
	cl := dial(t, "tcp", ts.addr)
	for _, sender := range []string{"a@x.example", "b@y.example", ""} {
		cl.send("request=smtpd_access_policy\nsender=" + sender + "\n\n")
		if got, want := cl.reply(), "450 4.7.10 sender "+sender; got != want {
			t.Errorf("reply %q, want %q", got, want)
		}
	}
	// Pipelined, in one write, and split at awkward places.
	cl.send("sender=p1\n\nsender=p2\r\n\r\nsender=p3\n\nsen")
	cl.send("der=p4\n")
	cl.send("\n")
	for _, want := range []string{"p1", "p2", "p3", "p4"} {
		if got := cl.reply(); got != "450 4.7.10 sender "+want {
			t.Errorf("pipelined: reply %q, want sender %s", got, want)
		}
	}
}

// The Server reuses one Request per connection: each Handler call sees
// exactly the attributes of its own request, none left over from the one
// before (a client certificate the previous message's client presented).
func TestServeRequestSeesOnlyItsAttributes(t *testing.T) {
	describe := HandlerFunc(func(_ context.Context, req *Request) (Action, error) {
		fp, ok := req.Lookup("ccert_fingerprint")
		return Action(fmt.Sprintf("450 4.7.10 %d attributes, ccert_fingerprint %q %v", req.Len(), fp, ok)), nil
	})
	ts := startServer(t, &Server{Handler: describe}, nil)
	cl := dial(t, "tcp", ts.addr)
	for _, tt := range []struct{ req, want string }{
		{"request=smtpd_access_policy\nccert_fingerprint=AB:CD\nsender=a@x.example\n\n", `3 attributes, ccert_fingerprint "AB:CD" true`},
		{"request=smtpd_access_policy\nsender=b@y.example\n\n", `2 attributes, ccert_fingerprint "" false`},
		{"ccert_fingerprint=EF\n\n", `1 attributes, ccert_fingerprint "EF" true`},
	} {
		cl.send(tt.req)
		if got := cl.reply(); got != "450 4.7.10 "+tt.want {
			t.Errorf("reply %q, want %q", got, "450 4.7.10 "+tt.want)
		}
	}
}

// Exim's ${readsocket} half-closes right after its request and reads until
// the server closes: the answer must come first, then the close.
func TestServeRequestThenCloseWrite(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			var l net.Listener
			addr := ""
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "policy.sock")
				var err error
				if l, err = listen.Listen("unix:"+addr, 0o660); err != nil {
					t.Fatal(err)
				}
			}
			ts := startServer(t, &Server{Handler: HandlerFunc(echoSender)}, l)
			if addr == "" {
				addr = ts.addr
			}
			for _, reqs := range []int{1, 2} {
				cl := dial(t, network, addr)
				cl.send(strings.Repeat("request=smtpd_access_policy\nsender=exim@x.example\n\n", reqs))
				if err := cl.c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				all, err := io.ReadAll(cl.c)
				if err != nil {
					t.Fatalf("read until close: %v", err)
				}
				if want := strings.Repeat("action=450 4.7.10 sender exim@x.example\n\n", reqs); string(all) != want {
					t.Errorf("%d request(s) then CloseWrite: got %q, want %q then close", reqs, all, want)
				}
			}
		})
	}
}

func TestServeMalformedClosesWithoutReply(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		closeSend bool // half-close after the input
		replies   int  // replies due before the close (earlier valid requests)
	}{
		{"line without =", "request=smtpd_access_policy\nsender\n\n", false, 0},
		{"empty name", "=x\n\n", false, 0},
		{"repeated attribute", "sender=a\nrecipient=b\nsender=c\n\n", false, 0},
		{"line too long", "sender=" + strings.Repeat("x", MaxLineSize) + "\n\n", false, 0},
		{"line too long, never ends", "sender=" + strings.Repeat("x", 4*MaxLineSize), false, 0},
		{"request too large", bigRequest(), false, 0},
		{"empty request", "\n", false, 0},
		{"binary", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", false, 0},
		{"EOF inside request", "request=smtpd_access_policy\nsender=a@x.example\n", true, 0},
		{"EOF inside line", "request=smtpd_acc", true, 0},
		{"valid then malformed", "sender=ok@x.example\n\nbroken\n\n", false, 1},
	}
	var calls sync.Map
	ts := startServer(t, &Server{Handler: HandlerFunc(func(ctx context.Context, r *Request) (Action, error) {
		calls.Store(r.Get("sender"), true)
		return echoSender(ctx, r)
	})}, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dial(t, "tcp", ts.addr)
			go func() { // the server may stop reading (and reset) before all is sent
				_ = cl.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(cl.c, tt.input)
				if tt.closeSend {
					_ = cl.c.(*net.TCPConn).CloseWrite()
				}
			}()
			for range tt.replies {
				cl.reply()
			}
			cl.expectClosed()
		})
	}
	if _, ok := calls.Load("a@x.example"); ok {
		t.Error("the Handler was called for an unfinished request")
	}
	// The server lives on.
	cl := dial(t, "tcp", ts.addr)
	cl.send("sender=after@x.example\n\n")
	if got := cl.reply(); got != "450 4.7.10 sender after@x.example" {
		t.Errorf("after malformed input: reply %q", got)
	}
	if !strings.Contains(ts.log.String(), "level=WARN msg=\"policyd: bad request; closing connection\"") {
		t.Errorf("protocol errors not logged at warn:\n%s", ts.log)
	}
}

func bigRequest() string {
	var b strings.Builder
	for i := 0; b.Len() <= MaxRequestSize; i++ {
		b.WriteString("attr" + strings.Repeat("q", i%5) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)) + "=" + strings.Repeat("v", 200) + "\n")
	}
	return b.String() + "\n"
}

func TestServeFailsClosed(t *testing.T) {
	const deferText = "450 4.7.10 TLS policy service temporarily unavailable; try again later"
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	sawDeadline := make(chan error, 1)
	tests := []struct {
		name      string
		handler   HandlerFunc
		deferText string
		wantLog   string
		keepsConn bool // the connection serves further requests
	}{
		{"error", func(context.Context, *Request) (Action, error) {
			return "DUNNO", errors.New("store unavailable")
		}, "", "store unavailable", true},
		{"panic", func(context.Context, *Request) (Action, error) {
			panic("nil map in rule 7")
		}, "", "nil map in rule 7", true},
		{"panic with custom DeferText", func(context.Context, *Request) (Action, error) {
			panic("boom")
		}, "451 4.3.0 try later", "boom", true},
		{"newline in action", func(context.Context, *Request) (Action, error) {
			return "DUNNO\n\naction=OK", nil
		}, "", "invalid action", true},
		{"NUL in action", func(context.Context, *Request) (Action, error) {
			return "550 5.7.10 no\x00OK", nil
		}, "", "invalid action", true},
		{"empty action", func(context.Context, *Request) (Action, error) {
			return "", nil
		}, "", "invalid action", true},
		{"hang ignoring ctx", func(context.Context, *Request) (Action, error) {
			<-release
			return "OK", nil
		}, "", "exceeded the request timeout", false},
		{"hang honouring ctx", func(ctx context.Context, _ *Request) (Action, error) {
			<-ctx.Done()
			if _, ok := ctx.Deadline(); !ok {
				sawDeadline <- errors.New("no deadline")
			} else {
				sawDeadline <- ctx.Err()
			}
			return "DUNNO", nil
		}, "", "request timeout", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: tt.handler, RequestTimeout: 100 * time.Millisecond, DeferText: tt.deferText}, nil)
			want := deferText
			if tt.deferText != "" {
				want = tt.deferText
			}
			cl := dial(t, "tcp", ts.addr)
			for i := range 2 {
				cl.send(string(fixture(t, "postfix37-rcpt-plain.txt")))
				if got := cl.reply(); got != want {
					t.Fatalf("request %d: action %q, want %q", i, got, want)
				}
				if !tt.keepsConn {
					cl.expectClosed()
					break
				}
			}
			logs := ts.log.String()
			if !strings.Contains(logs, tt.wantLog) || !strings.Contains(logs, "sender=alice@bank.example") ||
				!strings.Contains(logs, "recipient=legal@ourcorp.example") || !strings.Contains(logs, "remote=127.0.0.1:") {
				t.Errorf("log lacks %q or the request fields:\n%s", tt.wantLog, logs)
			}
			if strings.HasPrefix(tt.name, "panic") && !strings.Contains(logs, "server_test.go") {
				t.Errorf("panic logged without stack:\n%s", logs)
			}
		})
	}
	select {
	case err := <-sawDeadline:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Handler's ctx after the timeout: %v, want DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second): // its ctx is cancelled once the deferral is written
		t.Error("ctx-honouring Handler did not report")
	}
}

// The watchdog stays armed across requests and re-arms or disarms itself
// when it fires (armWatchdog): a Handler that hangs is still answered with
// DeferText about RequestTimeout after its request, whether it comes in
// the middle of busy traffic, when the timer has just fired for earlier
// requests, or after the connection has been idle.
func TestServeHangAfterTraffic(t *testing.T) {
	const timeout = 100 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	handler := HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
		if r.Get("sender") == "hang" {
			<-release
		}
		return "DUNNO", nil
	})
	for _, tt := range []struct {
		name        string
		busy, pause time.Duration // fast requests for busy, then nothing for pause
	}{
		{"first request", 0, 0},
		{"during traffic", 3 * timeout, 0},
		{"after idle", 3 * timeout, 3 * timeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: handler, RequestTimeout: timeout}, nil)
			cl := dial(t, "tcp", ts.addr)
			for start := time.Now(); time.Since(start) < tt.busy; {
				cl.send("sender=fast\n\n")
				if got := cl.reply(); got != "DUNNO" {
					t.Fatalf("fast request: %q", got)
				}
			}
			time.Sleep(tt.pause)
			start := time.Now()
			cl.send("sender=hang\n\n")
			got, err := cl.readReply(10 * time.Second)
			elapsed := time.Since(start)
			if err != nil || got != DefaultDeferText {
				t.Fatalf("hanging Handler: reply %q, %v; want %q", got, err, DefaultDeferText)
			}
			// Early would break the Handler's deadline; the upper bound
			// leaves room for a loaded machine but not for a missed
			// timer (the next would be RequestTimeout later at best).
			if elapsed < timeout-10*time.Millisecond || elapsed > timeout+time.Second {
				t.Errorf("answered after %v, want about RequestTimeout %v", elapsed, timeout)
			}
			cl.expectClosed()
		})
	}
}

func TestServeHandlerContextDeadline(t *testing.T) {
	got := make(chan time.Duration, 1)
	ts := startServer(t, &Server{RequestTimeout: 3 * time.Second, Handler: HandlerFunc(func(ctx context.Context, _ *Request) (Action, error) {
		d, ok := ctx.Deadline()
		if !ok || ctx.Err() != nil {
			got <- -1
		} else {
			got <- time.Until(d)
		}
		return "DUNNO", nil
	})}, nil)
	cl := dial(t, "tcp", ts.addr)
	cl.send("sender=a\n\n")
	cl.reply()
	if d := <-got; d <= 0 || d > 3*time.Second {
		t.Errorf("Handler's ctx deadline in %v, want within RequestTimeout 3s", d)
	}
}

func TestServeTimeouts(t *testing.T) {
	ts := startServer(t, &Server{Handler: HandlerFunc(dunno), IdleTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond}, nil)

	idle := dial(t, "tcp", ts.addr)
	idle.send("sender=a\n\n")
	idle.reply()
	idle.expectClosed() // IdleTimeout after the reply

	slow := dial(t, "tcp", ts.addr)
	slow.send("sender=a\nrecip") // and nothing more: ReadTimeout
	slow.expectClosed()
}

func TestShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ts := startServer(t, &Server{Handler: HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
		if r.Get("sender") == "busy" {
			close(entered)
			<-release
		}
		return "DUNNO", nil
	})}, nil)
	idle := dial(t, "tcp", ts.addr)
	idle.send("sender=idle\n\n")
	idle.reply()
	fresh := dial(t, "tcp", ts.addr) // connected, never sent anything
	busy := dial(t, "tcp", ts.addr)
	busy.send("sender=busy\n\n")
	<-entered

	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()

	// Idle connections go at once, while the busy one is still busy.
	idle.expectClosed()
	fresh.expectClosed()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a request in progress", err)
	default:
	}
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after Shutdown")
	}

	close(release)
	if got := busy.reply(); got != "DUNNO" {
		t.Errorf("busy connection: reply %q, want DUNNO", got)
	}
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	ts.served <- ErrServerClosed // for the cleanup
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
}

func TestShutdownDeadlineClosesBusyConnections(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	ts := startServer(t, &Server{RequestTimeout: time.Minute, Handler: HandlerFunc(func(context.Context, *Request) (Action, error) {
		close(entered)
		<-release
		return "DUNNO", nil
	})}, nil)
	busy := dial(t, "tcp", ts.addr)
	busy.send("sender=busy\n\n")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want DeadlineExceeded", err)
	}
	busy.expectClosed()
}

func TestMaxConns(t *testing.T) {
	entered := make(chan string, 4)
	release := make(chan struct{})
	ts := startServer(t, &Server{MaxConns: 2, Handler: HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
		if strings.HasPrefix(r.Get("sender"), "block") {
			entered <- r.Get("sender")
			<-release
		}
		return Action("450 4.7.10 " + r.Get("sender")), nil
	})}, nil)
	a := dial(t, "tcp", ts.addr)
	a.send("sender=a\n\n")
	a.reply()
	// The client reads the reply a moment before the server marks the
	// connection idle: wait, so that a has been idle longer than b.
	waitIdle(t, ts.Server, 1)
	b := dial(t, "tcp", ts.addr)
	b.send("sender=b\n\n")
	b.reply()

	waitIdle(t, ts.Server, 2)
	// A third connection displaces the one idle for longest (a).
	c := dial(t, "tcp", ts.addr)
	c.send("sender=c\n\n")
	if got := c.reply(); got != "450 4.7.10 c" {
		t.Errorf("third connection: %q", got)
	}
	a.expectClosed()
	b.send("sender=b2\n\n")
	if got := b.reply(); got != "450 4.7.10 b2" {
		t.Errorf("second connection after the third came: %q", got)
	}

	// With every connection busy, a new one is refused.
	b.send("sender=block-b\n\n")
	c.send("sender=block-c\n\n")
	<-entered
	<-entered
	d := dial(t, "tcp", ts.addr)
	d.send("sender=d\n\n")
	d.expectClosed()
	close(release)
	if got := b.reply(); got != "450 4.7.10 block-b" {
		t.Errorf("busy b: %q", got)
	}
	if got := c.reply(); got != "450 4.7.10 block-c" {
		t.Errorf("busy c: %q", got)
	}
	if !strings.Contains(ts.log.String(), "closing new connection") {
		t.Errorf("refusal not logged:\n%s", ts.log)
	}
}

// waitIdle waits until the server has n connections, all idle: a client
// reads its reply a moment before the server marks the connection idle.
func waitIdle(t *testing.T, s *Server, n int) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(time.Millisecond) {
		st := s.server().Stats()
		if st.All == n && st.Idle == n {
			return
		}
	}
	t.Fatalf("server never had %d idle connections", n)
}

func TestServeUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policyd.sock")
	l, err := listen.Listen("unix:"+path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
	ts := startServer(t, &Server{Handler: HandlerFunc(echoSender)}, l)
	cl := dial(t, "unix", path)
	for _, f := range []string{"postfix37-rcpt-tls13.txt", "postfix37-rcpt-null-sender.txt"} {
		cl.send(string(fixture(t, f)))
		cl.reply()
	}
	cl.send("broken\n\n")
	cl.expectClosed()
	if !strings.Contains(ts.log.String(), "remote=unix:") {
		t.Errorf("unix connections logged without a remote:\n%s", ts.log)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		s    *Server
	}{
		{"nil handler", &Server{}},
		{"DeferText with newline", &Server{Handler: HandlerFunc(dunno), DeferText: "450 4.7.10 x\naction=OK"}},
	}
	for _, tt := range tests {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := tt.s.Serve(l); err == nil || errors.Is(err, ErrServerClosed) {
			t.Errorf("%s: Serve = %v, want a configuration error", tt.name, err)
		}
	}
}

func benchServer(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: HandlerFunc(dunno), Logger: slog.New(slog.DiscardHandler)}
	go func() { _ = s.Serve(l) }()
	b.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return l.Addr().String()
}

// roundTrip sends req and reads the reply without allocating.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) error {
	if _, err := c.Write(req); err != nil {
		return err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.Equal(line, []byte("action=DUNNO\n")) {
		return errors.New("unexpected reply")
	}
	_, err = br.ReadSlice('\n')
	return err
}

// BenchmarkRoundTrip measures one request/reply over a loopback connection,
// one request at a time as Postfix sends them; the client is allocation-free.
func BenchmarkRoundTrip(b *testing.B) {
	addr := benchServer(b)
	req := fixture(b, "postfix37-rcpt-tls13.txt")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	b.ReportAllocs()
	for b.Loop() {
		if err := roundTrip(c, br, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripParallel is BenchmarkRoundTrip with one connection per
// goroutine (GOMAXPROCS of them), like several smtpd processes.
func BenchmarkRoundTripParallel(b *testing.B) {
	addr := benchServer(b)
	req := fixture(b, "postfix37-rcpt-tls13.txt")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if err := roundTrip(c, br, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// plainListener hands out its connections wrapped, so that the server
// cannot see they are TCP and serves them with blocking reads and writes
// instead of raw mode (internal/connserver/rawio.go).
type plainListener struct{ net.Listener }

type plainConn struct{ net.Conn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// slowListener lets 50 ms pass between accepting a connection and handing
// it to the server, so that what the client sends at once (a request and
// its half-close) is all there before the server first reads.
type slowListener struct{ net.Listener }

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	time.Sleep(50 * time.Millisecond)
	return c, err
}

// listenModes returns a loopback listener for each way the server serves a
// connection: raw mode (TCP as is) and blocking (TCP hidden). Both are
// slow to accept (slowListener).
func listenModes(t *testing.T) map[string]func() net.Listener {
	return map[string]func() net.Listener{
		"raw": func() net.Listener {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return slowListener{l}
		},
		"blocking": func() net.Listener {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return plainListener{slowListener{l}}
		},
	}
}

// The request loop, in raw mode and with blocking reads: sequential and
// pipelined requests, a request larger than the read buffer between two
// small ones, and a client half-closing after its request (as Exim does)
// or after a later one (closed at once after the reply, not at IdleTimeout).
func TestServeModes(t *testing.T) {
	var big strings.Builder
	big.WriteString("sender=big@x.example\n")
	for i := range 200 {
		fmt.Fprintf(&big, "attr%d=%s\n", i, strings.Repeat("v", 100)) // 21 KB, over the 4 KiB buffer
	}
	big.WriteString("\n")
	type step struct {
		send      string
		closeSend bool     // half-close after sending
		replies   []string // senders echoed, in order
	}
	tests := []struct {
		name        string
		steps       []step
		closedAfter time.Duration // the server closes within this after the last reply; 0: stays open
	}{
		{"sequential", []step{{"sender=a\n\n", false, []string{"a"}}, {"sender=b\n\n", false, []string{"b"}}, {"sender=c\n\n", false, []string{"c"}}}, 0},
		{"pipelined", []step{{"sender=a\n\nsender=b\n\nsender=c\n\n", false, []string{"a", "b", "c"}}, {"sender=d\n\n", false, []string{"d"}}}, 0},
		{"larger than the buffer", []step{{"sender=a\n\n", false, []string{"a"}}, {big.String(), false, []string{"big@x.example"}}, {"sender=b\n\n", false, []string{"b"}}}, 0},
		{"pipelined behind a large one", []step{{big.String() + "sender=a\n\n", false, []string{"big@x.example", "a"}}, {"sender=b\n\n", false, []string{"b"}}}, 0},
		// Exim: closed at once; so is any half-close.
		{"half-close after the first request", []step{{"sender=exim\n\n", true, []string{"exim"}}}, 500 * time.Millisecond},
		{"half-close after a later request", []step{{"sender=a\n\n", false, []string{"a"}}, {"sender=b\n\n", false, []string{"b"}}, {"sender=c\n\n", true, []string{"c"}}}, 500 * time.Millisecond},
		{"half-close after pipelined requests", []step{{"sender=a\n\n", false, []string{"a"}}, {"sender=b\n\nsender=c\n\n", true, []string{"b", "c"}}}, 500 * time.Millisecond},
	}
	for mode, listen := range listenModes(t) {
		t.Run(mode, func(t *testing.T) {
			ts := startServer(t, &Server{Handler: HandlerFunc(echoSender), IdleTimeout: time.Minute}, listen())
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					cl := dial(t, "tcp", ts.addr)
					for _, st := range tt.steps {
						cl.send(st.send)
						if st.closeSend {
							if err := cl.c.(*net.TCPConn).CloseWrite(); err != nil {
								t.Fatal(err)
							}
						}
						for _, want := range st.replies {
							if got := cl.reply(); got != "450 4.7.10 sender "+want {
								t.Fatalf("reply %q, want sender %s", got, want)
							}
						}
					}
					if tt.closedAfter == 0 {
						return
					}
					_ = cl.c.SetReadDeadline(time.Now().Add(tt.closedAfter))
					if rest, err := io.ReadAll(cl.br); err != nil || len(rest) > 0 {
						t.Errorf("after the last reply: %q, %v; want the server to close", rest, err)
					}
				})
			}
		})
	}
}

// A connection in raw mode whose Handler hangs is still ended by the
// watchdog, by MaxConns and by Shutdown, though its goroutine holds the
// socket's read lock (internal/connserver/rawio.go: kill).
func TestServeKillsHungRawConnection(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	entered := make(chan struct{}, 4)
	hang := HandlerFunc(func(context.Context, *Request) (Action, error) {
		entered <- struct{}{}
		<-release
		return "DUNNO", nil
	})
	ts := startServer(t, &Server{Handler: hang, RequestTimeout: 200 * time.Millisecond}, nil)
	cl := dial(t, "tcp", ts.addr)
	cl.send("sender=a\n\n")
	<-entered
	if got, err := cl.readReply(5 * time.Second); err != nil || got != DefaultDeferText {
		t.Fatalf("hung Handler: %q, %v; want %q", got, err, DefaultDeferText)
	}
	cl.expectClosed()

	// Shutdown with a deadline ends a connection whose Handler hangs, and
	// returns.
	ts2 := startServer(t, &Server{Handler: hang, RequestTimeout: time.Hour}, nil)
	cl2 := dial(t, "tcp", ts2.addr)
	cl2.send("sender=b\n\n")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts2.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown blocked on a connection whose Handler hangs")
	}
	cl2.expectClosed()
}

// A hung request keeps its connection counted against MaxConns until the
// Handler returns: its goroutine and socket live on, so freeing the slot
// at the timeout let hung requests pile up without bound. With every slot
// hung a newcomer is refused; once the Handler returns, slots free up.
func TestHungRequestsStayCounted(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	ts := startServer(t, &Server{MaxConns: 2, RequestTimeout: 200 * time.Millisecond,
		Handler: HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
			if r.Get("sender") == "hang" {
				<-release
			}
			return "DUNNO", nil
		})}, nil)
	var hung []*client
	for range 2 {
		c := dial(t, "tcp", ts.addr)
		c.send("sender=hang\n\n")
		if got := c.reply(); !strings.HasPrefix(got, "450 4.7.10") {
			t.Fatalf("reply %q, want the deferral", got)
		}
		hung = append(hung, c)
	}
	for range 3 {
		dial(t, "tcp", ts.addr).expectClosed() // refused: both slots hung
	}
	for _, c := range hung {
		c.c.Close() // as Postfix does
	}
	free()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, "tcp", ts.addr)
		c.send("sender=ok\n\n")
		if got, err := c.readReply(time.Second); err == nil && got == "DUNNO" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot free 5 s after the hung requests returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
