package policyd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// phaseCounts returns how many of s's connections are in each phase.
func phaseCounts(s *Server) (idle, busy, handler int) {
	st := s.server().Stats()
	return st.Idle, st.Active, st.Handler
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

// waitLong polls cond for up to 20 s: for properties that must hold
// eventually but whose timing a loaded machine stretches.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// refusalLines returns how many refusals the log accounts for and in how
// many lines: first lines count one each, "(repeated)" lines their times.
func refusalLines(log, line string) (refusals, lines int) {
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, line+"\""):
			refusals++
			lines++
		case strings.Contains(l, line+" (repeated)\""):
			var n int
			if i := strings.Index(l, " times="); i >= 0 {
				fmt.Sscanf(l[i+len(" times="):], "%d", &n)
			}
			refusals += n
			lines++
		}
	}
	return refusals, lines
}

// rawConn is a client that only watches for the server closing the
// connection.
type rawConn struct {
	nc     net.Conn
	closed chan struct{} // closed when a read ends (EOF, reset, …)
	got    []byte        // what the server sent, valid once closed
	at     time.Time     // when the read ended, valid once closed
}

// watch starts reading nc until it ends, for at most a minute.
func watch(t *testing.T, nc net.Conn) *rawConn {
	t.Helper()
	r := &rawConn{nc: nc, closed: make(chan struct{})}
	t.Cleanup(func() { nc.Close(); <-r.closed })
	_ = nc.SetReadDeadline(time.Now().Add(time.Minute))
	go func() {
		r.got, _ = io.ReadAll(nc)
		r.at = time.Now()
		close(r.closed)
	}()
	return r
}

// waitClosed asserts that the server closes r within wait.
func (r *rawConn) waitClosed(t *testing.T, what string, wait time.Duration) {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(wait):
		t.Fatalf("%s still open after %v", what, wait)
	}
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// drip writes payload to nc one byte per every, in the background, until
// the test ends, a write fails or the payload ends.
func drip(t *testing.T, nc net.Conn, payload string, every time.Duration) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { close(done); wg.Wait() })
	go func() {
		defer wg.Done()
		for i := 0; i < len(payload); i++ {
			if _, err := nc.Write([]byte{payload[i]}); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(every):
			}
		}
	}()
}

// TestMaxConnsRefusalsRateLimited: with every connection inside the
// Handler, newcomers are closed at once (not queued), and the log gets one
// line per window with a count of the rest.
func TestMaxConnsRefusalsRateLimited(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	s := &Server{MaxConns: 2, RequestTimeout: time.Minute, Handler: HandlerFunc(func(context.Context, *Request) (Action, error) {
		entered <- struct{}{}
		<-release
		return "DUNNO", nil
	})}
	s.limitLogEvery = time.Second
	ts := startServer(t, s, nil)
	a, b := dial(t, "tcp", ts.addr), dial(t, "tcp", ts.addr)
	a.send("sender=a\n\n")
	b.send("sender=b\n\n")
	<-entered
	<-entered

	const newcomers = 20
	for i := range newcomers {
		start := time.Now()
		r := watch(t, dialRaw(t, ts.addr))
		r.waitClosed(t, "connection over the limit", 5*time.Second)
		if len(r.got) != 0 {
			t.Fatalf("refused connection %d got %q", i, r.got)
		}
		// At once, not when a slot frees (never, here): a generous
		// bound for a loaded machine.
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("refused connection %d closed after %v, want at once", i, el)
		}
	}
	// Every refusal is accounted for (the last window's count comes when
	// it ends), in far fewer lines than refusals.
	const line = "closing new connection (no idle or slow connection to close)"
	var refusals, lines int
	waitLong(t, "every refusal logged or counted", func() bool {
		refusals, lines = refusalLines(ts.log.String(), line)
		return refusals == newcomers
	})
	if lines > newcomers/4 {
		t.Errorf("%d log lines for %d refusals, want a few (rate-limited):\n%s", lines, newcomers, ts.log)
	}
	close(release)
	if got := a.reply(); got != "DUNNO" {
		t.Errorf("busy a: %q", got)
	}
	if got := b.reply(); got != "DUNNO" {
		t.Errorf("busy b: %q", got)
	}
}

// TestMaxConnsSlowLoris: clients holding connections idle or dripping a
// request one byte per 100 ms cannot lock Postfix out. Idle connections go
// first; then the connection whose request has been arriving for longest
// (over SlowRequest) makes room; normal clients get their answers
// promptly, and no dripper ever gets one.
func TestMaxConnsSlowLoris(t *testing.T) {
	t.Parallel()
	const (
		maxConns    = 4
		readTimeout = 8 * time.Second
		every       = 100 * time.Millisecond
	)
	s := &Server{Handler: HandlerFunc(echoSender), MaxConns: maxConns, ReadTimeout: readTimeout}
	ts := startServer(t, s, nil)
	start := time.Now()
	// A request that would take 20 s to arrive.
	slow := "request=smtpd_access_policy\nsender=" + strings.Repeat("d", 160) + "@example.com\n\n"

	idlers := []*rawConn{watch(t, dialRaw(t, ts.addr)), watch(t, dialRaw(t, ts.addr))}
	waitFor(t, "2 idle connections", func() bool { idle, _, _ := phaseCounts(s); return idle == 2 })
	var drippers []*rawConn
	for i := range maxConns {
		nc := dialRaw(t, ts.addr)
		drippers = append(drippers, watch(t, nc))
		drip(t, nc, slow, every)
		waitFor(t, "dripper in progress", func() bool { _, busy, _ := phaseCounts(s); return busy == i+1 })
	}
	// The third and fourth dripper took the idle connections' places.
	for i, r := range idlers {
		r.waitClosed(t, "idle connection", readTimeout/4)
		if len(r.got) != 0 {
			t.Errorf("idle connection %d got %q", i, r.got)
		}
	}

	// Once the drippers have been at it for longer than SlowRequest, a
	// normal client gets in, taking the place of the longest-dripping
	// connection, and is answered at once.
	time.Sleep(DefaultSlowRequest + 2*every)
	request := func(name string) *client {
		t0 := time.Now()
		c := dial(t, "tcp", ts.addr)
		c.send(string(fixture(t, "postfix37-rcpt-tls13.txt")))
		if got := c.reply(); got != "450 4.7.10 sender alice@bank.example" {
			t.Fatalf("%s: %q", name, got)
		}
		if el := time.Since(t0); el > readTimeout/4 {
			t.Errorf("%s answered after %v, want well under ReadTimeout %v", name, el, readTimeout)
		}
		return c
	}
	first := request("first normal client")
	drippers[0].waitClosed(t, "longest dripper", readTimeout/4)
	waitFor(t, "first client idle", func() bool { idle, _, _ := phaseCounts(s); return idle == 1 })
	// The next one takes the place of the idle client (which would
	// reconnect), as idle connections go first.
	request("second normal client")
	first.expectClosed()
	// The others are bounded by ReadTimeout; none gets an answer.
	for i, r := range drippers {
		r.waitClosed(t, "dripper", readTimeout+5*time.Second)
		if len(r.got) != 0 {
			t.Errorf("dripper %d got %q", i, r.got)
		}
		if el := r.at.Sub(start); el > readTimeout+5*time.Second {
			t.Errorf("dripper %d closed after %v", i, el)
		}
	}
	if !strings.Contains(ts.log.String(), "closing the connection whose request is slowest to arrive") {
		t.Errorf("slow-loris eviction not logged:\n%s", ts.log)
	}
}

// TestMaxConnsPerListener: each listener has its own limit, so a flood on
// one cannot lock out clients of another.
func TestMaxConnsPerListener(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	s := &Server{MaxConns: 1, RequestTimeout: time.Minute, Handler: HandlerFunc(func(_ context.Context, r *Request) (Action, error) {
		if r.Get("sender") == "block" {
			entered <- struct{}{}
			<-release
		}
		return "DUNNO", nil
	})}
	ts := startServer(t, s, nil)
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l2)
	busy := dial(t, "tcp", ts.addr)
	busy.send("sender=block\n\n")
	<-entered
	refused := watch(t, dialRaw(t, ts.addr))
	refused.waitClosed(t, "second connection on the full listener", 2*time.Second)

	other := dial(t, "tcp", l2.Addr().String())
	other.send("sender=other\n\n")
	if got := other.reply(); got != "DUNNO" {
		t.Fatalf("other listener: %q", got)
	}
	close(release)
	if got := busy.reply(); got != "DUNNO" {
		t.Errorf("busy: %q", got)
	}
}

// TestClientNotReading: a client that pipelines requests and never reads
// the replies cannot hold its connection (and the replies' memory): the
// blocked write fails within ReadTimeout and the connection closes.
func TestClientNotReading(t *testing.T) {
	t.Parallel()
	const rt = 300 * time.Millisecond
	// 4 kB replies, so that a few hundred fill the socket buffers.
	long := Action("450 4.7.10 " + strings.Repeat("x", 4000))
	s := &Server{ReadTimeout: rt, IdleTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler),
		Handler: HandlerFunc(func(context.Context, *Request) (Action, error) { return long, nil })}
	ts := startServer(t, s, nil)
	nc := dialTinyWindow(t, ts.addr)
	defer nc.Close()
	// 20,000 requests: 80 MB of replies, far more than the socket
	// buffers hold.
	req := []byte(strings.Repeat("a=1\n\n", 20000))
	go nc.Write(req)
	waitFor(t, "a connection", func() bool { return s.server().Stats().All == 1 })
	// Closed by the write deadline, not left to IdleTimeout.
	waitLong(t, "the connection closed", func() bool { return s.server().Stats().All == 0 })
}

// dialTinyWindow connects with a 4 KiB receive buffer, so that the kernel
// cannot absorb megabytes of unread replies (loopback autotuning would).
func dialTinyWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}
