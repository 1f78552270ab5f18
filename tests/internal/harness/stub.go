package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// StubSocketmap is a minimal socketmap_table(5) server for the harness's own
// checks: it answers from a fixed table of raw replies ("OK encrypt",
// "NOTFOUND ", "TEMP why", …) keyed by "map key", answers "NOTFOUND " for any
// other request, and records every request it got. It is deliberately not
// the daemon's codec, so the harness can be trusted independently of it.
type StubSocketmap struct {
	// Addr is the listening address (127.0.0.1:port).
	Addr string

	l       net.Listener
	mu      sync.Mutex
	replies map[string]string
	reqs    []string
	wg      sync.WaitGroup
}

// NewStubSocketmap starts a stub server on 127.0.0.1:0 answering replies
// ("map key" → raw reply). It is closed by t.Cleanup.
func NewStubSocketmap(t testing.TB, replies map[string]string) *StubSocketmap {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("stub socketmap: listen: %v", err)
	}
	s := &StubSocketmap{Addr: l.Addr().String(), l: l, replies: map[string]string{}}
	s.Set(replies)
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		_ = l.Close()
		s.wg.Wait()
	})
	return s
}

// Set adds or replaces replies ("map key" → raw reply).
func (s *StubSocketmap) Set(replies map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range replies {
		s.replies[k] = v
	}
}

// Requests returns the requests received so far ("map key"), in order.
func (s *StubSocketmap) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

func (s *StubSocketmap) serve() {
	defer s.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	var open sync.Map
	// Closing idle connections lets Cleanup return: Postfix keeps socketmap
	// connections open for minutes. (Deferred calls run last-in first-out:
	// close first, then wait.)
	defer open.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		open.Store(c, nil)
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer open.Delete(c)
			defer c.Close()
			s.handle(c)
		}()
	}
}

func (s *StubSocketmap) handle(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		req, err := readNetstring(r, 10<<10)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = io.WriteString(c, netstring("PERM bad request"))
			}
			return
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, req)
		reply, ok := s.replies[req]
		s.mu.Unlock()
		if !ok {
			reply = "NOTFOUND "
		}
		if _, err := io.WriteString(c, netstring(reply)); err != nil {
			return
		}
	}
}

// netstring encodes s as "<len>:<s>,".
func netstring(s string) string { return strconv.Itoa(len(s)) + ":" + s + "," }

// readNetstring reads one netstring of at most max bytes from r.
func readNetstring(r *bufio.Reader, max int) (string, error) {
	n := 0
	digits := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			if digits == 0 && errors.Is(err, io.EOF) {
				return "", io.EOF
			}
			return "", fmt.Errorf("netstring length: %w", io.ErrUnexpectedEOF)
		}
		if b == ':' && digits > 0 {
			break
		}
		if b < '0' || b > '9' || n > max {
			return "", fmt.Errorf("netstring: bad length")
		}
		n = n*10 + int(b-'0')
		digits++
	}
	if n > max {
		return "", fmt.Errorf("netstring: length %d over %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("netstring body: %w", err)
	}
	if buf[n] != ',' {
		return "", fmt.Errorf("netstring: missing comma")
	}
	return string(buf[:n]), nil
}
