package connserver

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// phaseCounts returns how many of s's connections are in each phase.
func phaseCounts(s *Server) (idle, active, handler int) {
	st := s.Stats()
	return st.Idle, st.Active, st.Handler
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
	nc.SetReadDeadline(time.Now().Add(time.Minute))
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

// drip writes payload to nc one byte per every until done, a write fails
// or the payload ends. It returns when the goroutine has started.
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

// TestMaxConnsEvictsIdle: at the limit, a new connection takes the
// place of the connection idle for longest; Postfix reconnects silently.
func TestMaxConnsEvictsIdle(t *testing.T) {
	s := &Server{MaxConns: 2}
	logs := newServer(s, newLineHandler(t))
	addr := serve(t, s, logs)
	a := dial(t, addr)
	a.ask("a")
	waitFor(t, "a idle", func() bool { idle, _, _ := phaseCounts(s); return idle == 1 })
	b := dial(t, addr)
	b.ask("b")
	waitFor(t, "a and b idle", func() bool { idle, _, _ := phaseCounts(s); return idle == 2 })

	c := dial(t, addr)
	if got := c.ask("c"); got != "OK c" {
		t.Fatalf("new connection at the limit: %q", got)
	}
	a.expectClosed(3 * time.Second)
	if got := b.ask("b again"); got != "OK b again" {
		t.Errorf("b after c came: %q", got)
	}
	if !strings.Contains(logs.String(), "closing the longest idle connection") {
		t.Errorf("eviction not logged:\n%s", logs)
	}
}

// TestMaxConnsRefusesWhenBusy: with every connection inside the
// Handler, newcomers are closed at once (not queued), and the log gets one
// line per window with a count of the rest.
func TestMaxConnsRefusesWhenBusy(t *testing.T) {
	t.Parallel()
	h := newLineHandler(t)
	s := &Server{MaxConns: 2, RequestTimeout: time.Minute, LimitLogEvery: time.Second}
	logs := newServer(s, h)
	addr := serve(t, s, logs)
	a, b := dial(t, addr), dial(t, addr)
	a.send("slow")
	b.send("slow")
	<-h.entered
	<-h.entered

	const newcomers = 20
	for i := range newcomers {
		start := time.Now()
		r := watch(t, dialRaw(t, addr))
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
		refusals, lines = refusalLines(logs.String(), line)
		return refusals == newcomers
	})
	if lines > newcomers/4 {
		t.Errorf("%d log lines for %d refusals, want a few (rate-limited):\n%s", lines, newcomers, logs)
	}

	h.free()
	if got := a.reply(); got != "OK slow" {
		t.Errorf("busy a: %q", got)
	}
	if got := b.reply(); got != "OK slow" {
		t.Errorf("busy b: %q", got)
	}
}

// TestMaxConnsSlowLoris: clients holding connections idle or
// dripping a request one byte per 100 ms cannot lock Postfix out. Idle
// connections go first; then the connection whose request has been
// arriving for longest (over SlowRequest) makes room; normal clients get
// their answers promptly, and no dripper ever gets one.
func TestMaxConnsSlowLoris(t *testing.T) {
	t.Parallel()
	const (
		maxConns    = 4
		readTimeout = 8 * time.Second
		every       = 100 * time.Millisecond
	)
	s := &Server{MaxConns: maxConns, ReadTimeout: readTimeout}
	logs := newServer(s, newLineHandler(t))
	addr := serve(t, s, logs)
	start := time.Now()
	// A request that would take 20 s to arrive.
	slow := strings.Repeat("d", 200) + "\n"

	idlers := []*rawConn{watch(t, dialRaw(t, addr)), watch(t, dialRaw(t, addr))}
	waitFor(t, "2 idle connections", func() bool { idle, _, _ := phaseCounts(s); return idle == 2 })
	var drippers []*rawConn
	for i := range maxConns {
		nc := dialRaw(t, addr)
		drippers = append(drippers, watch(t, nc))
		drip(t, nc, slow, every)
		waitFor(t, "dripper in progress", func() bool { _, active, _ := phaseCounts(s); return active == i+1 })
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
	lookup := func(name string) *client {
		t0 := time.Now()
		c := dial(t, addr)
		if got := c.ask("normal"); got != "OK normal" {
			t.Fatalf("%s: %q", name, got)
		}
		if el := time.Since(t0); el > readTimeout/4 {
			t.Errorf("%s answered after %v, want well under ReadTimeout %v", name, el, readTimeout)
		}
		return c
	}
	first := lookup("first normal client")
	drippers[0].waitClosed(t, "longest dripper", readTimeout/4)
	waitFor(t, "first client idle", func() bool { idle, _, _ := phaseCounts(s); return idle == 1 })
	// The next one takes the place of the idle client (which would
	// reconnect), as idle connections go first.
	lookup("second normal client")
	first.expectClosed(time.Second)
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
	if !strings.Contains(logs.String(), "closing the connection whose request is slowest to arrive") {
		t.Errorf("slow-loris eviction not logged:\n%s", logs)
	}
}

// TestMaxConnsPerListener: each listener has its own limit, so a
// flood on one cannot lock out clients of another.
func TestMaxConnsPerListener(t *testing.T) {
	h := newLineHandler(t)
	s := &Server{MaxConns: 1, RequestTimeout: time.Minute}
	logs := newServer(s, h)
	addr1 := serve(t, s, logs)
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l2)
	busy := dial(t, addr1)
	busy.send("slow")
	<-h.entered
	refused := watch(t, dialRaw(t, addr1))
	refused.waitClosed(t, "second connection on the full listener", 2*time.Second)

	other := dial(t, l2.Addr().String())
	if got := other.ask("other"); got != "OK other" {
		t.Fatalf("other listener: %q", got)
	}
	h.free()
	if got := busy.reply(); got != "OK slow" {
		t.Errorf("busy: %q", got)
	}
}

// TestClientNotReading: a client that pipelines requests and never
// reads the replies cannot hold its connection (and the replies' memory):
// the blocked write fails within ReadTimeout and the connection closes.
func TestClientNotReading(t *testing.T) {
	t.Parallel()
	const rt = 300 * time.Millisecond
	h := newLineHandler(t)
	s := &Server{ReadTimeout: rt, IdleTimeout: time.Minute}
	logs := newServer(s, h)
	addr := serve(t, s, logs)
	nc := dialTinyWindow(t, addr)
	defer nc.Close()
	// 200 answers of 100 kB: far more than the socket buffers hold.
	go nc.Write([]byte(strings.Repeat("big\n", 200)))
	waitFor(t, "a connection", func() bool { return s.Stats().All == 1 })
	// Closed by the write deadline, not left to IdleTimeout.
	waitLong(t, "the connection closed", func() bool { return s.Stats().All == 0 })
	// It stopped at the first failed write: the rest were not answered.
	if n := h.calls.Load(); n >= 200 {
		t.Errorf("%d requests answered into a dead connection", n)
	}
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
