// Package maillog reads what Postfix 3.7's smtp(8) client logged with
// smtp_tls_loglevel = 1: the "… TLS connection established to HOST[IP]:PORT"
// lines, "certificate verification failed for …" and the delivery status
// lines ("QID: to=<…>, relay=…, dsn=…, status=sent|deferred|bounced (…)").
// Correlator ties a session's TLS line to its status lines by process id
// and relay host (the TLS line names no queue id) and yields one Delivery
// per status line.
//
// Lines come from Postfix's own maillog_file, from syslog files (RFC 3339
// or traditional time stamps) or from the systemd journal (journalctl -o
// json). Unknown lines are ignored; a line that looks like a TLS line but
// does not parse is reported as Malformed so that it can be counted.
package maillog
