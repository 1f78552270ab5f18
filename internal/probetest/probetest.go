// Package probetest provides loopback test fixtures for the prober: a test
// certificate authority, an in-process DNS server (miekg/dns) and fake MX
// servers (emersion/go-smtp, or raw sockets for broken and hostile ones),
// all on 127.0.0.x or ::1 so that nothing touches a public address.
package probetest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

// CA is a throwaway certificate authority.
type CA struct {
	Cert *x509.Certificate // self-signed CA certificate
	Key  *ecdsa.PrivateKey // signs what Issue returns
	Pool *x509.CertPool    // trusts only this CA
}

var serial atomic.Int64

// NewCA returns a new CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "tlspolicyd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	key, der := create(t, tmpl, nil, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, Pool: pool}
}

// Issue returns a server certificate for names, valid from nb to na.
func (ca *CA) Issue(t testing.TB, names []string, nb, na time.Time) tls.Certificate {
	t.Helper()
	return server(t, names, nb, na, ca.Cert, ca.Key)
}

// SelfSigned returns a server certificate for names, valid from nb to na,
// signed by its own key (trusted by no CA's Pool).
func SelfSigned(t testing.TB, names []string, nb, na time.Time) tls.Certificate {
	t.Helper()
	return server(t, names, nb, na, nil, nil)
}

// server makes a server certificate signed by parent's key signer, or
// self-signed when parent is nil.
func server(t testing.TB, names []string, nb, na time.Time, parent *x509.Certificate, signer *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		DNSNames:    names,
		NotBefore:   nb,
		NotAfter:    na,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	key, der := create(t, tmpl, parent, signer)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// create gives tmpl a fresh key and serial number and signs it with
// signer as parent (tmpl and its own key when parent is nil).
func create(t testing.TB, tmpl, parent *x509.Certificate, signer *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	if parent == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// Zone is an in-process DNS server on 127.0.0.1 (UDP and TCP, one port):
// names with records answer NOERROR (NODATA for a missing type), names
// given an rcode answer it, everything else is NXDOMAIN. A UDP answer
// larger than the client's EDNS0 buffer (512 bytes without EDNS0) is
// truncated with TC set, so that the client has to retry over TCP.
type Zone struct {
	Addr    string // host:port, for the prober's Resolver
	mu      sync.RWMutex
	rrs     map[string][]dns.RR // by lower-case FQDN
	rcodes  map[string]int
	queries atomic.Int64
	tcp     atomic.Int64
}

// NewZone starts a DNS server, stopped at the end of the test.
func NewZone(t testing.TB) *Zone {
	t.Helper()
	z := &Zone{rrs: map[string][]dns.RR{}, rcodes: map[string]int{}}
	z.Addr = StartDNS(t, z)
	return z
}

// StartDNS serves h over UDP and TCP on one 127.0.0.1 port until the end
// of the test and returns that host:port.
func StartDNS(t testing.TB, h dns.Handler) string {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	for tries := 0; ; tries++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if tries > 10 {
			t.Fatal(err)
		}
	}
	addr := pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return addr
}

// ServeDNS implements dns.Handler.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.RLock()
	rc, hasRC := z.rcodes[name]
	rrs, exists := z.rrs[name]
	z.mu.RUnlock()
	switch {
	case hasRC:
		m.Rcode = rc
	case !exists:
		m.Rcode = dns.RcodeNameError
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size) // sets TC when it had to drop records
	} else {
		z.tcp.Add(1)
	}
	_ = w.WriteMsg(m)
}

// Queries returns how many queries the zone has answered.
func (z *Zone) Queries() int64 { return z.queries.Load() }

// TCPQueries returns how many of those came over TCP.
func (z *Zone) TCPQueries() int64 { return z.tcp.Load() }

// Add publishes a record in zone-file syntax.
func (z *Zone) Add(t testing.TB, rr string) {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatalf("bad RR %q: %v", rr, err)
	}
	name := strings.ToLower(r.Header().Name)
	z.mu.Lock()
	z.rrs[name] = append(z.rrs[name], r)
	z.mu.Unlock()
}

// Rcode makes name answer rc (e.g. dns.RcodeServerFailure).
func (z *Zone) Rcode(name string, rc int) {
	z.mu.Lock()
	z.rcodes[dns.Fqdn(strings.ToLower(name))] = rc
	z.mu.Unlock()
}

// MX publishes "domain MX pref host" and host's address ip: an A record,
// an AAAA record if ip is IPv6, none if ip is "".
func (z *Zone) MX(t testing.TB, domain string, pref int, host, ip string) {
	t.Helper()
	z.Add(t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host))
	if ip == "" {
		return
	}
	typ := "A"
	if strings.Contains(ip, ":") {
		typ = "AAAA"
	}
	z.Add(t, fmt.Sprintf("%s. 300 IN %s %s", host, typ, ip))
}

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
