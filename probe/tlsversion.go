package probe

import (
	"fmt"
)

// tlsVersionName names a TLS version as Postfix and OpenSSL do.
func tlsVersionName(v uint16) string {
	switch v {
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// versionNames are Postfix's names of the TLS versions, by minor version
// number: tls_version_table and protocol_table (src/tls/tls_misc.c).
var versionNames = [...]string{"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}

// TLSVersion returns the version number of a TLS version named as Postfix
// and OpenSSL name it ("TLSv1.2": 0x0303), as TLSInfo.Version records it.
func TLSVersion(name string) (uint16, bool) {
	for i, n := range versionNames {
		if n == name {
			return 0x0301 + uint16(i), true
		}
	}
	return 0, false
}

// CheckProtocols says whether the Postfix SMTP client, offering the
// versions lo to hi (see store.ProtocolRange), completes a handshake with the
// server of t. The prober offers TLSv1 to TLSv1.3, so t.Version is the
// server's highest version: a server whose highest version is below lo
// fails for certain. known is false when the server's highest version is
// above hi (it probably negotiates down to a version Postfix offers, but
// the prober cannot tell whether it does) or unknown.
//
// Not known either: whether the server accepts a cipher Postfix offers
// (ciphers=, exclude=), and whether OpenSSL's own configuration (e.g. a
// system-wide MinProtocol = TLSv1.2) raises the floor.
func (t *TLSInfo) CheckProtocols(lo, hi uint16) (c Check, known bool) {
	if lo == 0 {
		return Check{Reason: "protocols= leaves no TLS version to offer"}, true
	}
	v, ok := TLSVersion(t.Version)
	switch {
	case !ok || v > hi:
		return Check{}, false
	case v < lo:
		return Check{Reason: fmt.Sprintf("the server's highest TLS version %s is below %s, the lowest protocols= allows",
			t.Version, tlsVersionName(lo))}, true
	}
	return Check{OK: true}, true
}
