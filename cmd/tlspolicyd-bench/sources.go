package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// The sources step: a daemon of its own with a small table, whose
// resolver and MTA-STS policy host are served by this process on
// loopback. After one lookup of every source domain (their first
// lookups), cached DANE/MTA-STS answers and table hits are driven
// alternately at the target connection count, and the cached rate must
// reach sourcesRateMin of the table hits' rate of the same run.
const (
	sourcesDomains = 200 // MTA-STS domains; as many DANE domains and table entries
	sourcesRateMin = 0.8
	sourcesRounds  = 3
)

// sourcesWorld is the DNS and HTTPS side of the sources step.
type sourcesWorld struct {
	dnsAddr string
	caFile  string
	port    int
	stop    func()
}

// startSourcesWorld serves, on loopback: DNS (UDP) for sN.test
// (_mta-sts TXT, mta-sts.sN.test A 127.0.0.1) and dN.test (a signed MX
// whose host has a DANE-EE TLSA record), the AD bit set for dN.test as a
// validating resolver would; and HTTPS with a certificate from a CA of
// its own, written to caFile, serving every sN.test an enforce policy.
func startSourcesWorld(dir string, n int) (*sourcesWorld, error) {
	digest := strings.Repeat("ab", 32)
	mux := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.RecursionAvailable = true
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		label, _, _ := strings.Cut(strings.TrimSuffix(name, ".test."), ".")
		rr := func(s string) {
			if r, err := dns.NewRR(s); err == nil {
				m.Answer = append(m.Answer, r)
			}
		}
		switch {
		case strings.HasPrefix(name, "_mta-sts.s") && q.Qtype == dns.TypeTXT:
			rr(q.Name + ` 3600 IN TXT "v=STSv1; id=1"`)
		case strings.HasPrefix(name, "mta-sts.s") && q.Qtype == dns.TypeA:
			rr(q.Name + " 3600 IN A 127.0.0.1")
		case strings.HasPrefix(label, "d") || strings.HasPrefix(name, "mx.d") || strings.HasPrefix(name, "_25._tcp.mx.d"):
			m.AuthenticatedData = true
			switch q.Qtype {
			case dns.TypeMX:
				rr(q.Name + " 3600 IN MX 10 mx." + q.Name)
			case dns.TypeA:
				rr(q.Name + " 3600 IN A 192.0.2.1")
			case dns.TypeTLSA:
				rr(q.Name + " 3600 IN TLSA 3 1 1 " + digest)
			}
		default:
			if !strings.HasPrefix(name, "s") && !strings.HasPrefix(name, "mx.") {
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	dsrv := &dns.Server{PacketConn: pc, Handler: mux}
	go func() { _ = dsrv.ActivateAndServe() }()

	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("mta-sts.s%d.test", i))
	}
	cert, caPEM, err := sourcesCert(names)
	if err != nil {
		_ = dsrv.Shutdown()
		return nil, err
	}
	caFile := filepath.Join(dir, "sources-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		_ = dsrv.Shutdown()
		return nil, err
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		_ = dsrv.Shutdown()
		return nil, err
	}
	hsrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.Host, ":")
		d := strings.TrimPrefix(host, "mta-sts.")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "version: STSv1\r\nmode: enforce\r\nmx: mx.%s\r\nmx: *.mx.%s\r\nmax_age: 86400\r\n", d, d)
	})}
	go func() { _ = hsrv.Serve(l) }()
	return &sourcesWorld{dnsAddr: pc.LocalAddr().String(), caFile: caFile, port: l.Addr().(*net.TCPAddr).Port,
		stop: func() { _ = hsrv.Close(); _ = dsrv.Shutdown() }}, nil
}

// sourcesCert returns a server certificate for names and the PEM of the
// CA that signed it.
func sourcesCert(names []string) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlspolicyd-bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// sourcesStep runs the sources step and sets the sources-rate target.
func (b *bench) sourcesStep(ctx context.Context) error {
	c := targetConns(b.o.conns)
	w, table, tableCases, srcCases, err := b.sourcesSetup()
	if err != nil {
		return err
	}
	defer w.stop()
	for name, cs := range map[string][]lookupCase{"sources-table.jsonl": tableCases, "sources-cached.jsonl": srcCases} {
		if err := writeCases(filepath.Join(b.cases, name), cs); err != nil {
			return err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	logFile := filepath.Join(b.work, "daemon-sources.log")
	p, err := b.startServe(logFile, "--table", table, "--socketmap", addr, "--policyd", "",
		"--dane=true", "--mta-sts=true", "--resolver", w.dnsAddr, "--https-ca", w.caFile,
		"--mta-sts-port", strconv.Itoa(w.port), "--allow-private", "--sources-cache", filepath.Join(b.work, "sources.json"))
	if err != nil {
		return err
	}
	defer func() { _ = p.stop() }()
	if err := waitListen(ctx, p, 30*time.Second, addr); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logFile)
	}
	t0 := time.Now()
	if err := warmSources(ctx, addr, srcCases); err != nil {
		return fmt.Errorf("sources step: first lookups: %w (log: %s)", err, logFile)
	}
	b.logf("sources daemon (pid %d): first lookups of %d DANE and %d MTA-STS domains in %s",
		p.pid(), sourcesDomains, sourcesDomains, time.Since(t0).Round(time.Millisecond))
	b.printHeader()
	ratios, err := b.pairedRounds(ctx, sourcesRounds, func(n int) [2]stepSpec {
		return [2]stepSpec{
			{id: roundID("sources-table", c, n), name: "table hits (same daemon)", proto: "socketmap", addr: addr,
				cases: "sources-table.jsonl", conns: c, d: b.o.dur, srvPID: p.pid(), daemon: true},
			{id: roundID("sources-cached", c, n), name: "cached DANE/MTA-STS answers", proto: "socketmap", addr: addr,
				cases: "sources-cached.jsonl", conns: c, d: b.o.dur, srvPID: p.pid(), daemon: true},
		}
	})
	if err != nil {
		return err
	}
	m := median(ratios, true)
	b.targets["sources-rate"] = target{ok: m >= sourcesRateMin,
		detail: fmt.Sprintf("median %.2fx the table hits' rate (%s)", m, eachRound("%.2fx", ratios))}
	b.notes = append(b.notes, "the sources step's \"x redis\" column is the ratio to the table hits of the same round")
	return nil
}

// pairedRounds runs rounds of two steps each, the second judged against
// the first of its round: its ratio goes in the "x redis" column and in
// the ratios returned.
func (b *bench) pairedRounds(ctx context.Context, rounds int, specs func(round int) [2]stepSpec) ([]float64, error) {
	var ratios []float64
	for n := 1; n <= rounds; n++ {
		s := specs(n)
		ref, err := b.step(ctx, s[0])
		if err != nil {
			return nil, err
		}
		b.add(ref, nil)
		r, err := b.step(ctx, s[1])
		if err != nil {
			return nil, err
		}
		b.add(r, ref)
		ratios = append(ratios, r.ratio)
	}
	return ratios, nil
}

// sourcesSetup starts the DNS and HTTPS side of the sources and fleet
// steps and writes their table; it returns the world (stop it), the
// table's path, the lookups of its entries, and the lookups the sources
// answer (sN.test by MTA-STS, dN.test by DANE).
func (b *bench) sourcesSetup() (w *sourcesWorld, table string, tableCases, srcCases []lookupCase, err error) {
	table = filepath.Join(b.work, "sources-table.yaml")
	var tb strings.Builder
	tb.WriteString("outbound:\n")
	for i := range sourcesDomains {
		fmt.Fprintf(&tb, "  e%d.example: encrypt\n", i)
		tableCases = append(tableCases, lookupCase{Key: fmt.Sprintf("e%d.example", i), Want: "OK encrypt"})
		srcCases = append(srcCases,
			lookupCase{Key: fmt.Sprintf("s%d.test", i), Want: fmt.Sprintf("OK secure match=mx.s%d.test:.mx.s%d.test servername=hostname", i, i)},
			lookupCase{Key: fmt.Sprintf("d%d.test", i), Want: "OK dane-only"})
	}
	if err := os.WriteFile(table, []byte(tb.String()), 0o644); err != nil {
		return nil, "", nil, nil, err
	}
	w, err = startSourcesWorld(b.work, sourcesDomains)
	return w, table, tableCases, srcCases, err
}

// warmSources looks up every case once, waiting for each domain's first
// lookup to give its final answer.
func warmSources(ctx context.Context, addr string, cases []lookupCase) error {
	cl, err := socketmap.Dial(ctx, addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, cs := range cases {
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err := cl.Lookup(ctx, "tls_policy", cs.Key)
			if err != nil {
				return err
			}
			if got := strings.TrimSpace(r.Status.String() + " " + r.Data); got == cs.Want {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("%s: %q, want %q", cs.Key, got, cs.Want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
