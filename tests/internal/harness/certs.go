package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCA is a throwaway certificate authority for TLS tests: it issues
// server certificates for a throwaway smtpd and client certificates for
// swaks. Its certificate is in File (PEM), usable as smtpd_tls_CAfile.
type TestCA struct {
	// File is the CA certificate in PEM.
	File string

	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// CertFiles is a certificate and its private key in PEM files.
type CertFiles struct {
	// Cert and Key are the PEM files (the key unencrypted, mode 0600).
	Cert, Key string
	// DER is the certificate in DER, as it goes over the wire.
	DER []byte
	// Leaf is the parsed certificate.
	Leaf *x509.Certificate
}

// Fingerprint returns the SHA-256 fingerprint of the certificate the way
// Postfix reports it in ccert_fingerprint (smtpd_tls_fingerprint_digest =
// sha256): the digest of the DER certificate in upper-case hex with
// colons, as `openssl x509 -fingerprint -sha256` prints it.
func (c CertFiles) Fingerprint() string { return colonHex(sha256.Sum256(c.DER)) }

// PubkeyFingerprint returns the SHA-256 fingerprint of the certificate's
// SubjectPublicKeyInfo, as Postfix reports it in ccert_pubkey_fingerprint.
func (c CertFiles) PubkeyFingerprint() string {
	return colonHex(sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo))
}

func colonHex(sum [sha256.Size]byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// NewTestCA creates a CA named name (its subject CN) with its files in
// t.TempDir().
func NewTestCA(t testing.TB, name string) *TestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("test CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("test CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse test CA certificate: %v", err)
	}
	ca := &TestCA{dir: t.TempDir(), cert: cert, key: key}
	ca.File = filepath.Join(ca.dir, "ca.pem")
	if err := writePEM(ca.File, "CERTIFICATE", der, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// Issue creates a certificate for cn (also its DNS name) signed by the CA,
// for TLS servers and clients alike, and writes it and its key to
// CN.pem and CN.key in the CA's directory.
func (ca *TestCA) Issue(t testing.TB, cn string) CertFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("key for %s: %v", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("certificate for %s: %v", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate for %s: %v", cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key for %s: %v", cn, err)
	}
	c := CertFiles{
		Cert: filepath.Join(ca.dir, cn+".pem"),
		Key:  filepath.Join(ca.dir, cn+".key"),
		DER:  der,
		Leaf: leaf,
	}
	if err := writePEM(c.Cert, "CERTIFICATE", der, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(c.Key, "PRIVATE KEY", keyDER, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("certificate serial: %v", err)
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
