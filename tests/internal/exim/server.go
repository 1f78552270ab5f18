package exim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Answer is what a Scripted server does with one connection: write Reply
// (possibly empty) and close, or, with Hang, write Reply and keep the
// connection open until the test ends (a server that never finishes).
type Answer struct {
	Reply string
	Hang  bool
}

// Scripted is a loopback server that answers each connection the way
// Exim's ${readsocket} talks: it reads the request until the client
// half-closes (or the request looks complete), then answers once. It serves
// as a socketmap or policy server with arbitrary, also malformed, replies,
// and records every request.
type Scripted struct {
	// Addr is the listening address (127.0.0.1:port).
	Addr string

	l       net.Listener
	answer  func(req string) Answer
	mu      sync.Mutex
	reqs    []string
	wg      sync.WaitGroup
	done    chan struct{}
	hanging sync.Map // net.Conn kept open by Hang answers
}

// NewScripted starts a server on 127.0.0.1:0 that answers each request with
// answer(request). t.Cleanup closes it and every connection it holds.
func NewScripted(t testing.TB, answer func(req string) Answer) *Scripted {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("scripted server: listen: %v", err)
	}
	s := &Scripted{Addr: l.Addr().String(), l: l, answer: answer, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

// Fixed returns an answer function that always answers a.
func Fixed(a Answer) func(string) Answer { return func(string) Answer { return a } }

// Requests returns the requests received so far, in order.
func (s *Scripted) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

func (s *Scripted) close() {
	close(s.done)
	_ = s.l.Close()
	s.hanging.Range(func(k, _ any) bool {
		_ = k.(net.Conn).Close()
		return true
	})
	s.wg.Wait()
}

func (s *Scripted) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

// complete reports whether req is a whole request without waiting for EOF:
// a policy request ends with an empty line; a socketmap netstring with a
// comma after its length.
func complete(req []byte) bool {
	if bytes.HasSuffix(req, []byte("\n\n")) {
		return true
	}
	var n, i int
	for i = 0; i < len(req) && req[i] >= '0' && req[i] <= '9'; i++ {
		n = n*10 + int(req[i]-'0')
		if n > 1<<20 {
			return false
		}
	}
	return i > 0 && i < len(req) && req[i] == ':' && len(req) >= i+1+n+1 && req[i+1+n] == ','
}

func (s *Scripted) handle(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req []byte
	buf := make([]byte, 4096)
	for !complete(req) {
		n, err := c.Read(buf)
		req = append(req, buf[:n]...)
		if err != nil {
			break // EOF: Exim half-closed; anything else: answer what we have
		}
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, string(req))
	s.mu.Unlock()
	a := s.answer(string(req))
	if a.Reply != "" {
		_, _ = io.WriteString(c, a.Reply)
	}
	if !a.Hang {
		_ = c.Close()
		return
	}
	s.hanging.Store(c, nil)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
	}
	_ = c.Close()
}

// Forward returns an answer function that passes each request to the policy
// or socketmap server at addr and answers what it replied (read until it
// closes, as Exim does). A failure answers nothing (the client sees a close
// without reply).
func Forward(addr string) func(string) Answer {
	return func(req string) Answer {
		reply, err := exchange(addr, req)
		if err != nil {
			return Answer{}
		}
		return Answer{Reply: reply}
	}
}

// exchange sends req to addr, half-closes and reads the reply until the
// server closes.
func exchange(addr, req string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("forward to %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", fmt.Errorf("forward to %s: %w", addr, err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return "", errors.New("forward: not a TCP connection")
	}
	if err := tc.CloseWrite(); err != nil {
		return "", fmt.Errorf("forward to %s: half-close: %w", addr, err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("forward to %s: read: %w", addr, err)
	}
	return string(reply), nil
}
