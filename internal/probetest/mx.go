package probetest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Farm runs fake MX servers on loopback addresses, all on one port (the
// prober's Port), and counts the connections each accepts.
type Farm struct {
	Port  int      // every fake MX listens on it
	CA    *CA      // issues GoodMX's certificates
	conns sync.Map // ip -> *atomic.Int64 accepted connections
}

// NewFarm picks a free port for the farm's servers and holds it on
// 127.0.0.1 until the end of the test, so that no other listener of the
// test process is given it meanwhile.
func NewFarm(t testing.TB, ca *CA) *Farm {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &Farm{Port: l.Addr().(*net.TCPAddr).Port, CA: ca}
}

// Accepted returns how many connections the fake MX at ip accepted.
func (f *Farm) Accepted(ip string) int64 {
	v, ok := f.conns.Load(ip)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

// Accept implements net.Listener.
func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// listen opens ip on the farm's port, counting from zero again.
func (f *Farm) listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.Port)))
	if err != nil {
		t.Fatalf("fake MX on %s: %v", ip, err)
	}
	n := new(atomic.Int64)
	f.conns.Store(ip, n)
	return countingListener{l, n}
}

type session struct{}

var errNoMail = errors.New("this fake MX takes no mail")

func (session) Reset()                               {}
func (session) Logout() error                        { return nil }
func (session) Mail(string, *smtp.MailOptions) error { return errNoMail }
func (session) Rcpt(string, *smtp.RcptOptions) error { return errNoMail }
func (session) Data(io.Reader) error                 { return errNoMail }

// Serve starts a go-smtp MX on ip; tlsConf nil means no STARTTLS. It is
// stopped at the end of the test, or earlier by calling stop (so that a
// test can replace it).
func (f *Farm) Serve(t testing.TB, ip string, tlsConf *tls.Config) (stop func()) {
	t.Helper()
	l := f.listen(t, ip)
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return session{}, nil }))
	s.Domain = "fake-mx." + ip
	s.TLSConfig = tlsConf
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.Serve(l) }()
	stop = sync.OnceFunc(func() { s.Close() })
	t.Cleanup(stop)
	return stop
}

// GoodMX serves STARTTLS with a CA-signed certificate for names, valid
// until notAfter (zero: 90 days from now). stop is as for Serve.
func (f *Farm) GoodMX(t testing.TB, ip string, notAfter time.Time, names ...string) (stop func()) {
	t.Helper()
	if notAfter.IsZero() {
		notAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	cert := f.CA.Issue(t, names, time.Now().Add(-time.Hour), notAfter)
	return f.Serve(t, ip, &tls.Config{Certificates: []tls.Certificate{cert}})
}

// PlainMX serves SMTP without STARTTLS. stop is as for Serve.
func (f *Farm) PlainMX(t testing.TB, ip string) (stop func()) {
	t.Helper()
	return f.Serve(t, ip, nil)
}

// Raw accepts connections on ip and hands each to handle, for servers
// go-smtp will not imitate: tarpits, odd banners, broken STARTTLS. At the
// end of the test the connections still open are closed and the handlers
// waited for.
func (f *Farm) Raw(t testing.TB, ip string, handle func(net.Conn)) {
	t.Helper()
	l := f.listen(t, ip)
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				stop := make(chan struct{})
				go func() {
					select {
					case <-done:
						c.Close()
					case <-stop:
					}
				}()
				handle(c)
				close(stop)
			}()
		}
	}()
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
}

// Tarpit is a Raw handler that accepts and never says a word.
func Tarpit(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// BannerThenWait returns a Raw handler that sends banner and then reads
// until the client leaves (answering QUIT) or is silent for 5 seconds.
func BannerThenWait(banner string) func(net.Conn) {
	return func(c net.Conn) {
		_, _ = io.WriteString(c, banner)
		buf := make([]byte, 512)
		for {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(strings.ToUpper(string(buf[:n])), "QUIT") {
				_, _ = io.WriteString(c, "221 bye\r\n")
				return
			}
		}
	}
}

// Script is a fake MX that answers SMTP commands from a table; its Handle
// method is a Raw handler.
type Script struct {
	// Replies holds the reply (CRLF-terminated lines) to each upper-cased
	// command verb; "" is the banner. A reply "CLOSE" closes the
	// connection instead. QUIT always answers "221 bye" and closes.
	Replies map[string]string
	// Otherwise answers a verb missing from Replies ("": 502 5.5.1).
	Otherwise string
	// Heard, if set, is called with each verb received, QUIT included.
	Heard func(verb string)
}

// Handle plays the script on c, for at most 10 seconds.
func (s Script) Handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, s.Replies[""]); err != nil {
		return
	}
	otherwise := s.Otherwise
	if otherwise == "" {
		otherwise = "502 5.5.1 unknown command\r\n"
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		if s.Heard != nil {
			s.Heard(verb)
		}
		reply, ok := s.Replies[verb]
		switch {
		case verb == "QUIT":
			_, _ = io.WriteString(c, "221 bye\r\n")
			return
		case reply == "CLOSE":
			return
		case !ok:
			reply = otherwise
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}
