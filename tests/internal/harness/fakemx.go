package harness

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message a FakeMX accepted.
type Message struct {
	From string
	To   []string
	Data []byte
	// TLS reports whether the message came over STARTTLS.
	TLS bool
}

// FakeMX is a loopback SMTP server (emersion/go-smtp) that accepts every
// message and records it. Without a TLS config it does not offer STARTTLS,
// so a Postfix client told to "encrypt" must refuse to send to it.
type FakeMX struct {
	// Host is the listening IP (e.g. 127.0.0.2) and Port its TCP port.
	Host string
	Port int

	srv *smtp.Server
	mu  sync.Mutex
	// sessions counts SMTP connections; msgs holds the accepted messages.
	sessions int
	msgs     []Message
}

// FakeMXOption configures NewFakeMX.
type FakeMXOption func(*smtp.Server)

// WithTLS makes the fake MX offer STARTTLS with cfg.
func WithTLS(cfg *tls.Config) FakeMXOption {
	return func(s *smtp.Server) { s.TLSConfig = cfg }
}

// NewFakeMX starts a fake MX on host:0 (host is a loopback address such as
// 127.0.0.2). It is shut down by t.Cleanup.
func NewFakeMX(t testing.TB, host string, opts ...FakeMXOption) *FakeMX {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("fake MX: listen on %s: %v", host, err)
	}
	mx := &FakeMX{Host: host, Port: l.Addr().(*net.TCPAddr).Port}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		mx.mu.Lock()
		mx.sessions++
		mx.mu.Unlock()
		return &mxSession{mx: mx, conn: c}, nil
	}))
	s.Domain = "mx.fake.invalid"
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.MaxMessageBytes = 1 << 20
	for _, o := range opts {
		o(s)
	}
	mx.srv = s
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
		<-done
	})
	return mx
}

// Addr returns host:port.
func (mx *FakeMX) Addr() string { return net.JoinHostPort(mx.Host, itoa(mx.Port)) }

// Messages returns a copy of the messages accepted so far.
func (mx *FakeMX) Messages() []Message {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	return append([]Message(nil), mx.msgs...)
}

// Sessions returns how many SMTP connections the fake MX has seen (a
// connection that ends after EHLO, as Postfix's does when it requires TLS
// that is not offered, counts too).
func (mx *FakeMX) Sessions() int {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	return mx.sessions
}

// ReceivedFor returns the messages that had rcpt among their recipients.
func (mx *FakeMX) ReceivedFor(rcpt string) []Message {
	var out []Message
	for _, m := range mx.Messages() {
		for _, to := range m.To {
			if to == rcpt {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

type mxSession struct {
	mx   *FakeMX
	conn *smtp.Conn
	from string
	to   []string
}

func (s *mxSession) Reset()        { s.from, s.to = "", nil }
func (s *mxSession) Logout() error { return nil }

func (s *mxSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *mxSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	s.mx.msgs = append(s.mx.msgs, Message{From: s.from, To: append([]string(nil), s.to...), Data: data, TLS: isTLS})
	return nil
}
