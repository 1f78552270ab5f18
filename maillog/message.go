package maillog

import (
	"strings"
)

// Kind says what a message is.
type Kind uint8

// Message kinds.
const (
	Other        Kind = iota // not a line this package reads: ignored
	TLSSession               // "… TLS connection established to …"
	VerifyFailed             // "certificate verification failed for …"
	Status                   // "QID: to=<…>, relay=…, status=…"
	Malformed                // looks like a TLS line but does not parse
)

// Trust levels of a TLS session, as Postfix names them.
const (
	Verified  = "Verified"  // chain trusted and the name matched the policy
	Trusted   = "Trusted"   // chain trusted, name not checked
	Untrusted = "Untrusted" // chain not trusted (self-signed, unknown CA) or not checked
	Anonymous = "Anonymous" // no server certificate (anonymous cipher)
)

// Endpoint is a peer as Postfix names it: HOST[ADDR]:PORT.
type Endpoint struct {
	Host, Addr, Port string
}

// String returns the endpoint the way Postfix writes it.
func (e Endpoint) String() string {
	s := e.Host + "[" + e.Addr + "]"
	if e.Port != "" {
		s += ":" + e.Port
	}
	return s
}

// Message is one parsed smtp(8) message. Which fields are set depends on
// Kind.
type Message struct {
	Kind Kind

	// TLSSession and VerifyFailed, and Status (the relay; empty for
	// relay=none).
	Peer Endpoint

	// TLSSession.
	Trust    string // Verified, Trusted, Untrusted or Anonymous
	Protocol string // e.g. TLSv1.3
	Cipher   string

	// VerifyFailed: what OpenSSL or Postfix said, e.g. "self-signed
	// certificate", "untrusted issuer /CN=…", "certificate has expired".
	Detail string

	// Status.
	QueueID string
	To      string // the recipient address, without <>
	DSN     string // e.g. 4.7.5
	Status  string // sent, deferred, bounced, expired, …
	Text    string // the reason in parentheses
}

const (
	tlsMark    = " TLS connection established to "
	verifyMark = "certificate verification failed for "
)

// LooksTLS reports whether msg claims to be one of the TLS lines, so that
// one that does not parse can be told from an unrelated line.
func LooksTLS(msg string) bool {
	return strings.Contains(msg, "TLS connection established") || strings.Contains(msg, "verification failed for")
}

// ParseMessage parses the text of an smtp(8) log line (after "prog[pid]: ").
func ParseMessage(msg string) Message {
	if i := strings.Index(msg, tlsMark); i >= 0 {
		return parseTLS(msg[:i], msg[i+len(tlsMark):])
	}
	if i := strings.Index(msg, verifyMark); i >= 0 {
		rest := msg[i+len(verifyMark):]
		j := strings.Index(rest, ": ")
		if j < 0 {
			return Message{Kind: Malformed}
		}
		peer, ok := parseEndpoint(rest[:j])
		if !ok {
			return Message{Kind: Malformed}
		}
		return Message{Kind: VerifyFailed, Peer: peer, Detail: rest[j+2:]}
	}
	if m, ok := parseStatus(msg); ok {
		return m
	}
	if LooksTLS(msg) {
		return Message{Kind: Malformed}
	}
	return Message{}
}

// parseTLS parses "TRUST" and "HOST[IP]:PORT: PROTO with cipher CIPHER …".
func parseTLS(trust, rest string) Message {
	bad := Message{Kind: Malformed}
	switch trust {
	case Verified, Trusted, Untrusted, Anonymous:
	default:
		return bad
	}
	i := strings.Index(rest, ": ")
	if i < 0 {
		return bad
	}
	peer, ok := parseEndpoint(rest[:i])
	if !ok {
		return bad
	}
	proto, after, ok := strings.Cut(rest[i+2:], " with cipher ")
	if !ok || proto == "" || strings.ContainsRune(proto, ' ') {
		return bad
	}
	cipher, _, _ := strings.Cut(after, " ")
	if cipher == "" {
		return bad
	}
	return Message{Kind: TLSSession, Peer: peer, Trust: trust, Protocol: proto, Cipher: cipher}
}

// parseEndpoint parses HOST[ADDR]:PORT or HOST[ADDR].
func parseEndpoint(s string) (Endpoint, bool) {
	i := strings.IndexByte(s, '[')
	j := strings.LastIndexByte(s, ']')
	if i <= 0 || j < i || strings.ContainsAny(s[:i], " []") {
		return Endpoint{}, false
	}
	e := Endpoint{Host: s[:i], Addr: s[i+1 : j]}
	switch tail := s[j+1:]; {
	case tail == "":
	case tail[0] == ':' && len(tail) > 1 && allDigits(tail[1:]):
		e.Port = tail[1:]
	default:
		return Endpoint{}, false
	}
	if e.Addr == "" || strings.ContainsAny(e.Addr, " []") {
		return Endpoint{}, false
	}
	return e, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseStatus parses "QID: to=<rcpt>, [orig_to=<…>, ]relay=R, …, dsn=D,
// status=S (text)".
func parseStatus(msg string) (Message, bool) {
	qid, rest, ok := strings.Cut(msg, ": to=<")
	if !ok || !validQueueID(qid) {
		return Message{}, false
	}
	to, rest, ok := strings.Cut(rest, ">, ")
	if !ok {
		return Message{}, false
	}
	m := Message{Kind: Status, QueueID: qid, To: to}
	head, text, _ := strings.Cut(rest, " (")
	m.Text = strings.TrimSuffix(text, ")")
	for _, f := range strings.Split(head, ", ") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "relay":
			if v != "none" {
				if e, ok := parseEndpoint(v); ok {
					m.Peer = e
				} else {
					m.Peer = Endpoint{Host: v}
				}
			}
		case "dsn":
			m.DSN = v
		case "status":
			m.Status = v
		}
	}
	if m.Status == "" {
		return Message{}, false
	}
	return m, true
}

// validQueueID accepts Postfix's short (hex) and long (base 52) queue ids.
func validQueueID(s string) bool {
	if len(s) < 5 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
