// Package probetest provides loopback test fixtures for the prober: a test
// certificate authority, an in-process DNS server (miekg/dns) and fake MX
// servers (emersion/go-smtp) with or without STARTTLS, all on 127.0.0.x so
// that nothing touches a public address.
package probetest

import (
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
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	Pool *x509.CertPool // trusts only this CA
}

var serial atomic.Int64

// NewCA returns a new CA valid for a day.
func NewCA(t testing.TB) *CA {
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Zone is an in-process DNS server on 127.0.0.1 (UDP and TCP, one port):
// names with records answer NOERROR (NODATA for a missing type), names
// given an rcode answer it, everything else is NXDOMAIN.
type Zone struct {
	Addr   string // host:port, for the prober's Resolver
	mu     sync.RWMutex
	rrs    map[string][]dns.RR
	rcodes map[string]int
}

// NewZone starts a DNS server, stopped at the end of the test.
func NewZone(t testing.TB) *Zone {
	t.Helper()
	z := &Zone{rrs: map[string][]dns.RR{}, rcodes: map[string]int{}}
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
	z.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: l, Handler: z}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return z
}

// ServeDNS implements dns.Handler.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
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
	_ = w.WriteMsg(m)
}

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

// MX publishes "domain MX pref host" and host's IPv4 address ip.
func (z *Zone) MX(t testing.TB, domain string, pref int, host, ip string) {
	t.Helper()
	z.Add(t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host))
	z.Add(t, fmt.Sprintf("%s. 300 IN A %s", host, ip))
}

// Farm runs fake MX servers on 127.0.0.x addresses, all on one port (the
// prober's Port).
type Farm struct {
	Port int
	CA   *CA
}

// NewFarm picks a free port for the farm's servers.
func NewFarm(t testing.TB, ca *CA) *Farm {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return &Farm{Port: port, CA: ca}
}

type session struct{}

var errNoMail = errors.New("this fake MX takes no mail")

func (session) Reset()                               {}
func (session) Logout() error                        { return nil }
func (session) Mail(string, *smtp.MailOptions) error { return errNoMail }
func (session) Rcpt(string, *smtp.RcptOptions) error { return errNoMail }
func (session) Data(io.Reader) error                 { return errNoMail }

// Serve starts a go-smtp MX on ip; tlsConf nil means no STARTTLS.
func (f *Farm) Serve(t testing.TB, ip string, tlsConf *tls.Config) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.Port)))
	if err != nil {
		t.Fatalf("fake MX on %s: %v", ip, err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return session{}, nil }))
	s.Domain = "fake-mx." + ip
	s.TLSConfig = tlsConf
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close() })
}

// GoodMX serves STARTTLS with a CA-signed certificate for names, valid
// until notAfter (zero: 90 days from now).
func (f *Farm) GoodMX(t testing.TB, ip string, notAfter time.Time, names ...string) {
	t.Helper()
	if notAfter.IsZero() {
		notAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	cert := f.CA.Issue(t, names, time.Now().Add(-time.Hour), notAfter)
	f.Serve(t, ip, &tls.Config{Certificates: []tls.Certificate{cert}})
}

// PlainMX serves SMTP without STARTTLS.
func (f *Farm) PlainMX(t testing.TB, ip string) { f.Serve(t, ip, nil) }
