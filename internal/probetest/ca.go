package probetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync/atomic"
	"testing"
	"time"
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
