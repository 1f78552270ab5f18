// Package probe is tlspolicyd's STARTTLS prober.
//
// A Prober finds the mail exchangers of a Postfix next-hop the way the
// Postfix SMTP client does and connects to every address of every one of
// them to measure what delivery under each TLS security level would do:
//
//   - RFC 5321 §5.1: MX lookup, preference order, every A and AAAA address
//     of each exchanger; a domain with no MX records (NODATA) has an
//     implicit MX, its own A/AAAA records; a domain that does not exist
//     (NXDOMAIN) has no mail exchanger at all; a lookup that fails
//     (SERVFAIL, timeout) is temporary and never taken for "no MX".
//   - RFC 7505: a null MX ("0 .") means the domain accepts no mail.
//   - RFC 3207: EHLO, the STARTTLS extension, the TLS handshake; the
//     certificate is recorded and checked after the handshake, so a bad
//     certificate is a finding, not a failed probe. The session ends with
//     QUIT: the prober never sends MAIL or RCPT.
//
// Certificate names are matched as Postfix 3.x does (src/tls/tls_client.c
// match_servername): subjectAltName dNSNames when present, else the
// CommonName; "verify" matches the MX host name (match=hostname), "secure"
// the next-hop domain and its subdomains (match=nexthop:dot-nexthop).
//
// The prober is careful not to become a scanner for whoever controls DNS
// answers or can make the daemon look up domains: addresses that are not
// globally reachable (loopback, private, link-local, CGNAT, multicast,
// unspecified, and IPv6 forms embedding such an IPv4 address) are refused
// after resolution unless Config.AllowPrivate; at most MaxMX exchangers
// and MaxAddrs addresses are probed per target, at most Concurrency
// sessions run at once, and at most MaxPerMinute probes start per minute.
//
// The verdict (Result) says for the Postfix levels may, encrypt, verify and
// secure whether delivery would succeed to every reachable MX address.
//
// The daemon keeps the latest Result per target and the learned policies
// derived from them in its source cache (package srccache, Probes): a
// domain whose every reachable MX offers STARTTLS is learned as "encrypt",
// and a later probe that finds STARTTLS missing does not undo that before
// learn_max_age has passed (a defence against STRIPTLS attacks); it is
// reported as an Event. This package holds what both share: Event,
// LearnedRecord and the checks BareDomain and AddrsKnown.
package probe
