package probe

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
)

// rsaCert returns a certificate for names with an RSA key, signed by ca:
// RSA key exchange needs an RSA server key, and probetest issues ECDSA.
func rsaCert(t *testing.T, ca *probetest.CA, names ...string) tls.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestProbeCipherSuitesAsPostfix: the prober offers what the Postfix SMTP
// client with OpenSSL 3 offers (postfixCipherSuites), so a server limited
// to RSA key exchange or to TLS 1.0 is reported as Postfix would find it,
// and one limited to RC4 or 3DES, which OpenSSL 3 does not build, fails as
// it does with Postfix.
func TestProbeCipherSuitesAsPostfix(t *testing.T) {
	const ip = "127.0.0.2"
	tests := []struct {
		name       string
		suites     []uint16
		maxVersion uint16
		status     string
		version    string // recorded TLS version, when the handshake works
		cipher     string
	}{
		{"RSA key exchange, AES-128-GCM", []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, tls.VersionTLS12,
			StatusOK, "TLSv1.2", "TLS_RSA_WITH_AES_128_GCM_SHA256"},
		{"RSA key exchange, AES-128-CBC-SHA", []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}, tls.VersionTLS12,
			StatusOK, "TLSv1.2", "TLS_RSA_WITH_AES_128_CBC_SHA"},
		{"RSA key exchange, AES-256-GCM", []uint16{tls.TLS_RSA_WITH_AES_256_GCM_SHA384}, tls.VersionTLS12,
			StatusOK, "TLSv1.2", "TLS_RSA_WITH_AES_256_GCM_SHA384"},
		{"TLS 1.0 only, RSA key exchange", []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}, tls.VersionTLS10,
			StatusOK, "TLSv1", "TLS_RSA_WITH_AES_128_CBC_SHA"},
		{"TLS 1.0 only, ECDHE", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}, tls.VersionTLS10,
			StatusOK, "TLSv1", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"},
		{"ECDHE AES-128-CBC-SHA256", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}, tls.VersionTLS12,
			StatusOK, "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"},
		{"3DES only: OpenSSL 3 has none", []uint16{tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}, tls.VersionTLS12,
			StatusTLSFailed, "", ""},
		{"RC4 only: OpenSSL 3 has none", []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}, tls.VersionTLS12,
			StatusTLSFailed, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z, f := loopback(t)
			z.MX(t, "old.test", 10, "mx1.old.test", ip)
			f.Serve(t, ip, &tls.Config{
				Certificates: []tls.Certificate{rsaCert(t, f.CA, "mx1.old.test")},
				CipherSuites: tc.suites,
				MinVersion:   tls.VersionTLS10,
				MaxVersion:   tc.maxVersion,
			})
			r, err := testProber(t, z, f, nil).Probe(context.Background(), "old.test")
			if err != nil {
				t.Fatal(err)
			}
			dump, _ := json.MarshalIndent(r, "", "  ")
			if r.Status != tc.status {
				t.Fatalf("Status = %q, want %q\n%s", r.Status, tc.status, dump)
			}
			a := r.MX[0].Addrs[0]
			if tc.status != StatusOK {
				if a.ErrorClass != ClassHandshake {
					t.Errorf("error class = %q, want %q\n%s", a.ErrorClass, ClassHandshake, dump)
				}
				return
			}
			if a.TLS == nil || a.TLS.Version != tc.version || a.TLS.Cipher != tc.cipher {
				t.Fatalf("TLS = %+v, want %s with %s\n%s", a.TLS, tc.version, tc.cipher, dump)
			}
			if !r.Levels[LevelSecure].OK {
				t.Errorf("secure = %+v, want OK (the certificate is good)", r.Levels[LevelSecure])
			}
		})
	}
}

// TestPostfixCipherSuites: every suite Go deems secure is offered, no RC4
// or 3DES suite is, and no suite appears twice.
func TestPostfixCipherSuites(t *testing.T) {
	for _, cs := range tls.CipherSuites() {
		if !slices.Contains(postfixCipherSuites, cs.ID) {
			t.Errorf("%s not offered", cs.Name)
		}
	}
	seen := map[uint16]bool{}
	for _, id := range postfixCipherSuites {
		name := tls.CipherSuiteName(id)
		if strings.Contains(name, "RC4") || strings.Contains(name, "3DES") {
			t.Errorf("%s offered: OpenSSL 3 builds neither RC4 nor 3DES", name)
		}
		if seen[id] {
			t.Errorf("%s offered twice", name)
		}
		seen[id] = true
	}
}
