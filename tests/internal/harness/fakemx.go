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
	// sessions counts SMTP sessions, handshakes completed TLS handshakes,
	// mails the MAIL commands and msgs the accepted messages.
	sessions   int
	handshakes int
	mails      []Mail
	msgs       []Message
}

// Mail is one MAIL command a FakeMX received, accepted or not followed by
// a message.
type Mail struct {
	From string
	// TLS reports whether it came after STARTTLS.
	TLS bool
}

type fakeMXOptions struct {
	tls  *tls.Config
	port int
}

// FakeMXOption configures NewFakeMX.
type FakeMXOption func(*fakeMXOptions)

// WithTLS makes the fake MX offer STARTTLS with cfg.
func WithTLS(cfg *tls.Config) FakeMXOption {
	return func(o *fakeMXOptions) { o.tls = cfg }
}

// OnPort makes the fake MX listen on port instead of a free one: a Postfix
// instance connects to one port (smtp_tcp_port), so fake MX hosts of one
// instance share a port on different loopback addresses.
func OnPort(port int) FakeMXOption {
	return func(o *fakeMXOptions) { o.port = port }
}

// NewFakeMX starts a fake MX on host:0 (host is a loopback address such as
// 127.0.0.2). It is shut down by t.Cleanup.
func NewFakeMX(t testing.TB, host string, opts ...FakeMXOption) *FakeMX {
	t.Helper()
	var o fakeMXOptions
	for _, f := range opts {
		f(&o)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, itoa(o.port)))
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
	if o.tls != nil {
		// Count completed handshakes: a client that rejects the
		// certificate after the handshake (Postfix under verify) sends
		// QUIT, never MAIL.
		cfg := o.tls.Clone()
		next := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			mx.mu.Lock()
			mx.handshakes++
			mx.mu.Unlock()
			if next != nil {
				return next(cs)
			}
			return nil
		}
		s.TLSConfig = cfg
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

// NewTLSFakeMX starts a fake MX on host that offers STARTTLS with cert
// (e.g. TestCA.Issue's). A Postfix instance trusts it for verify and secure
// when its PostfixConfig.CAFile is the issuing CA's File.
func NewTLSFakeMX(t testing.TB, cert CertFiles, host string, opts ...FakeMXOption) *FakeMX {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
	if err != nil {
		t.Fatalf("fake MX certificate: %v", err)
	}
	opts = append(opts, WithTLS(&tls.Config{Certificates: []tls.Certificate{pair}}))
	return NewFakeMX(t, host, opts...)
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

// TLSHandshakes returns how many STARTTLS handshakes completed.
func (mx *FakeMX) TLSHandshakes() int {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	return mx.handshakes
}

// Mails returns the MAIL commands received so far, in order.
func (mx *FakeMX) Mails() []Mail {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	return append([]Mail(nil), mx.mails...)
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
	_, isTLS := s.conn.TLSConnectionState()
	s.mx.mu.Lock()
	defer s.mx.mu.Unlock()
	s.mx.mails = append(s.mx.mails, Mail{From: from, TLS: isTLS})
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
