// Package probetest provides loopback test fixtures for the prober: a test
// certificate authority, an in-process DNS server (miekg/dns) and fake MX
// servers (emersion/go-smtp, or raw sockets for broken and hostile ones),
// all on 127.0.0.x or ::1 so that nothing touches a public address.
package probetest
