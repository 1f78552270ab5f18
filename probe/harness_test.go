package probe

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
	"log/slog"
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

// ---- test CA ----

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: "tlspolicyd test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate for names valid in [nb, na], signed
// by the CA, or self-signed when ca is nil.
func (ca *testCA) issue(t testing.TB, names []string, nb, na time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) valid(t testing.TB, names ...string) tls.Certificate {
	return ca.issue(t, names, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// ---- in-process DNS ----

// zone is an authoritative-looking, recursive-pretending DNS server: names
// it has records for answer NOERROR (NODATA for a missing type), names with
// an rcode set answer that, everything else is NXDOMAIN.
type zone struct {
	mu      sync.RWMutex
	rrs     map[string][]dns.RR // lower-case FQDN
	rcodes  map[string]int
	queries atomic.Int64
	tcp     atomic.Int64 // queries over TCP
	addr    string
}

func newZone(t testing.TB) *zone {
	t.Helper()
	z := &zone{rrs: map[string][]dns.RR{}, rcodes: map[string]int{}}
	var pc net.PacketConn
	var l net.Listener
	for tries := 0; ; tries++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if tries > 10 {
			t.Fatal(err)
		}
	}
	z.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return z
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
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

func (z *zone) add(t testing.TB, rr string) {
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

func (z *zone) rcode(name string, rc int) {
	z.mu.Lock()
	z.rcodes[dns.Fqdn(name)] = rc
	z.mu.Unlock()
}

// mx publishes "domain MX pref host" and host's address.
func (z *zone) mx(t testing.TB, domain string, pref int, host, ip string) {
	t.Helper()
	z.add(t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host))
	if ip != "" {
		z.addr4or6(t, host, ip)
	}
}

func (z *zone) addr4or6(t testing.TB, host, ip string) {
	t.Helper()
	typ := "A"
	if strings.Contains(ip, ":") {
		typ = "AAAA"
	}
	z.add(t, fmt.Sprintf("%s. 300 IN %s %s", host, typ, ip))
}

// ---- fake MX servers ----

// mxFarm runs fake MX servers on 127.0.0.x, all on one port.
type mxFarm struct {
	port  int
	ca    *testCA
	conns sync.Map // ip -> *atomic.Int64 accepted connections
}

func newFarm(t testing.TB, ca *testCA) *mxFarm {
	t.Helper()
	// Take a free port on 127.0.0.1 and keep it: every fake MX uses it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &mxFarm{port: l.Addr().(*net.TCPAddr).Port, ca: ca}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func (f *mxFarm) listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.port)))
	if err != nil {
		t.Fatalf("fake MX on %s: %v", ip, err)
	}
	n := new(atomic.Int64)
	f.conns.Store(ip, n)
	return countingListener{l, n}
}

// accepted returns how many connections the fake MX at ip accepted.
func (f *mxFarm) accepted(ip string) int64 {
	v, ok := f.conns.Load(ip)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

type smtpSession struct{}

var errNoMail = errors.New("this fake MX takes no mail")

func (smtpSession) Reset()                               {}
func (smtpSession) Logout() error                        { return nil }
func (smtpSession) Mail(string, *smtp.MailOptions) error { return errNoMail }
func (smtpSession) Rcpt(string, *smtp.RcptOptions) error { return errNoMail }
func (smtpSession) Data(io.Reader) error                 { return errNoMail }
func newSession(*smtp.Conn) (smtp.Session, error)        { return smtpSession{}, nil }

var _ smtp.Backend = smtp.BackendFunc(newSession)

// smtpServer starts a go-smtp server on ip; tlsConf nil = no STARTTLS.
func (f *mxFarm) smtpServer(t testing.TB, ip string, tlsConf *tls.Config) {
	t.Helper()
	l := f.listen(t, ip)
	s := smtp.NewServer(smtp.BackendFunc(newSession))
	s.Domain = "fake-mx." + ip
	s.TLSConfig = tlsConf
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close() })
}

// goodMX serves STARTTLS with a CA-signed certificate for names.
func (f *mxFarm) goodMX(t testing.TB, ip string, names ...string) {
	cert := f.ca.valid(t, names...)
	f.smtpServer(t, ip, &tls.Config{Certificates: []tls.Certificate{cert}})
}

// rawServer accepts connections and hands each to handle (plain sockets
// for tarpits and odd banners).
func (f *mxFarm) rawServer(t testing.TB, ip string, handle func(net.Conn)) {
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

// tarpit accepts and never says a word.
func tarpit(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// bannerThenWait sends a fixed greeting and waits for the client to leave.
func bannerThenWait(banner string) func(net.Conn) {
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

// ---- prober under test ----

func testProber(t testing.TB, z *zone, f *mxFarm, mod func(*Config)) *Prober {
	cfg := Config{
		Resolver:     z.addr,
		Port:         f.port,
		Timeout:      3 * time.Second,
		HELO:         "probe.tlspolicyd.test",
		AllowPrivate: true,
		Roots:        f.ca.pool,
		Logger:       slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg)
}

// scripted answers SMTP commands from a table keyed by the upper-cased
// command verb; "" is the banner. A missing verb answers 502. The
// connection closes after QUIT or a reply "CLOSE".
func scripted(replies map[string]string) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, replies[""]); err != nil {
			return
		}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			verb := strings.ToUpper(strings.Fields(line + " x")[0])
			reply, ok := replies[verb]
			switch {
			case verb == "QUIT":
				_, _ = io.WriteString(c, "221 bye\r\n")
				return
			case reply == "CLOSE":
				return
			case !ok:
				reply = "502 5.5.1 unknown command\r\n"
			}
			if _, err := io.WriteString(c, reply); err != nil {
				return
			}
		}
	}
}
