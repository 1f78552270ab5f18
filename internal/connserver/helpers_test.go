package connserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests drive the server with a line protocol: a request is a line,
// the answer "OK <request>" on a line; "slow" waits for the handler's
// release, "big" gets a 100 kB answer; a stream ending inside a line is
// answered "bad" and closed.

var errTruncated = errors.New("line cut short")

type lineSession struct {
	r   *bufio.Reader
	h   *lineHandler
	req string
	ans string
}

func (s *lineSession) Complete() bool {
	b, _ := s.r.Peek(s.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

func (s *lineSession) Read() error {
	line, err := s.r.ReadString('\n')
	switch {
	case err == io.EOF && line == "":
		return io.EOF
	case err == io.EOF:
		return errTruncated
	case err != nil:
		return err
	}
	s.req = strings.TrimSuffix(line, "\n")
	return nil
}

func (s *lineSession) Call(ctx context.Context) { s.ans = s.h.answer(ctx, s.req) }

func (s *lineSession) Append(out []byte, _ time.Duration) []byte {
	return append(append(out, s.ans...), '\n')
}

func (s *lineSession) Timeout(out []byte, _ time.Duration) []byte {
	return append(out, "timeout\n"...)
}

func (s *lineSession) Malformed(out []byte, err error) []byte {
	if errors.Is(err, errTruncated) {
		return append(out, "bad\n"...)
	}
	return out
}

// lineHandler answers the line protocol and counts its calls.
type lineHandler struct {
	calls   atomic.Int64
	entered chan struct{} // a "slow" request has begun
	release chan struct{} // closed by free to let "slow" requests return
	once    sync.Once
}

func newLineHandler(t *testing.T) *lineHandler {
	h := &lineHandler{entered: make(chan struct{}, 100), release: make(chan struct{})}
	t.Cleanup(h.free)
	return h
}

func (h *lineHandler) free() { h.once.Do(func() { close(h.release) }) }

func (h *lineHandler) answer(_ context.Context, req string) string {
	h.calls.Add(1)
	switch req {
	case "slow":
		h.entered <- struct{}{}
		<-h.release
	case "big":
		return "OK " + strings.Repeat("x", 100_000)
	}
	return "OK " + req
}

var errTestClosed = errors.New("line: server closed")

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

// newServer returns s set up for the line protocol with h, logging at
// debug level into the returned buffer.
func newServer(s *Server, h *lineHandler) *logBuffer {
	logs := &logBuffer{}
	s.Name, s.ErrClosed = "line", errTestClosed
	s.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.NewSession = func(r *bufio.Reader, _ string) Session { return &lineSession{r: r, h: h} }
	return logs
}

// serve runs s on a loopback listener until the test ends.
func serve(t *testing.T, s *Server, logs *logBuffer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, errTestClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return l.Addr().String()
}

// client is a test connection speaking the line protocol.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(req string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, req+"\n"); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one answer line, waiting at most 5 s.
func (c *client) reply() string {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading answer: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func (c *client) ask(req string) string {
	c.t.Helper()
	c.send(req)
	return c.reply()
}

// expectClosed asserts that the server closes the connection within wait
// without sending anything more.
func (c *client) expectClosed(wait time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	rest, err := io.ReadAll(c.r)
	if len(rest) > 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("got %q, %v; want the connection closed", rest, err)
	}
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
