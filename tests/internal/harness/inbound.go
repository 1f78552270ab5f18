package harness

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
)

// InboundDomain is the domain a receiving test instance relays for: mail
// to it is accepted from outside clients (subject to the policy service),
// mail to any other domain gets "Relay access denied".
const InboundDomain = "ourcorp.example"

// InboundMain returns the main.cf parameters of a receiving instance: it
// relays for InboundDomain, mynetworks is empty (so 127.0.0.1 is an outside
// client), relay control comes first, then check_policy_service inet:policy
// is the only recipient restriction, and accepted mail is put on hold (read
// it with Postcat). smtpd offers STARTTLS with the server certificate and
// asks clients for theirs, reporting SHA-256 fingerprints. Pass the result as
// PostfixConfig.Main and add listeners with SmtpdListener.
func InboundMain(policy string, server CertFiles) map[string]string {
	return map[string]string{
		"relay_domains":                InboundDomain,
		"mynetworks":                   "",
		"smtpd_relay_restrictions":     "permit_mynetworks, reject_unauth_destination",
		"smtpd_recipient_restrictions": "check_policy_service inet:" + policy,
		"smtpd_data_restrictions":      "check_client_access static:HOLD",
		"smtpd_tls_security_level":     "may",
		"smtpd_tls_cert_file":          server.Cert,
		"smtpd_tls_key_file":           server.Key,
		"smtpd_tls_ask_ccert":          "yes",
		"smtpd_tls_fingerprint_digest": "sha256",
		"smtpd_tls_loglevel":           "1",
	}
}

// SmtpdListener returns a master.cf line for a chrooted smtpd listening on
// addr (127.0.0.1:port) with the main.cf overrides given (-o name=value;
// values with spaces use Postfix's "-o { name = value }" form).
func SmtpdListener(addr string, overrides map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s inet n - y - - smtpd", addr)
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		v := overrides[k]
		if strings.ContainsAny(v, " \t") {
			fmt.Fprintf(&b, " -o { %s = %s }", k, v)
		} else {
			fmt.Fprintf(&b, " -o %s=%s", k, v)
		}
	}
	return b.String()
}

// WaitListening waits up to timeout until addr accepts TCP connections.
func WaitListening(ctx context.Context, addr string, timeout time.Duration) error {
	ok := WaitFor(ctx, timeout, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
	if !ok {
		return fmt.Errorf("%s not accepting connections after %v", addr, timeout)
	}
	return nil
}

// Postcat returns the headers of queued message qid as `postcat -hq qid`
// prints them (any queue, the hold queue included), one header per line
// (continuation lines kept).
func (p *Postfix) Postcat(ctx context.Context, qid string) (string, error) {
	res, err := p.command(ctx, "", "postcat", "-hq", qid)
	if err != nil {
		return "", err
	}
	return res.Stdout, nil
}

// SwaksSession is what one swaks run said and heard: the transcript
// (stdout and stderr) and its exit status.
type SwaksSession struct {
	Result
	// Args are swaks's arguments, for failure messages.
	Args []string
}

// Swaks runs swaks with --server server and args (add --to, --from,
// --tls, ...). A non-zero exit (a rejected recipient) is not an error;
// read the replies with Reply.
func Swaks(ctx context.Context, server string, args ...string) (SwaksSession, error) {
	all := append([]string{"--server", server, "--helo", "client.tlspolicyd-test.invalid",
		"--timeout", "20"}, args...)
	res, err := Run(ctx, "", "swaks", all...)
	return SwaksSession{Result: res, Args: all}, err
}

var (
	// swaks prefixes what it sends with " -> " (" ~> " inside TLS) and
	// what it receives with "<- " ("<~ " inside TLS), or "<** " ("<~* ")
	// when the reply is an error.
	swaksSent = regexp.MustCompile(`^ *[-~]> (.*)$`)
	swaksRecv = regexp.MustCompile(`^<(?:-|~|\*\*|~\*) +(.*)$`)
	// queuedAs is Postfix's reply to the end of DATA.
	queuedAs = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)`)
)

// Reply returns the server's reply to the first command swaks sent that
// starts with cmd (case-insensitive, e.g. "RCPT TO", "STARTTLS", "."),
// its lines joined with "\n"; "" if that command was never sent.
func (s SwaksSession) Reply(cmd string) string {
	sc := bufio.NewScanner(strings.NewReader(s.Stdout + "\n" + s.Stderr))
	found := false
	var lines []string
	for sc.Scan() {
		line := sc.Text()
		if m := swaksSent.FindStringSubmatch(line); m != nil {
			if found {
				break
			}
			found = len(m[1]) >= len(cmd) && strings.EqualFold(m[1][:len(cmd)], cmd)
			continue
		}
		if m := swaksRecv.FindStringSubmatch(line); m != nil && found {
			lines = append(lines, m[1])
		}
	}
	return strings.Join(lines, "\n")
}

// QueueID returns the queue ID from Postfix's "250 2.0.0 Ok: queued as
// QID" reply to the end of DATA, or "" when the message was not accepted.
func (s SwaksSession) QueueID() string {
	sc := bufio.NewScanner(strings.NewReader(s.Stdout))
	for sc.Scan() {
		if m := swaksRecv.FindStringSubmatch(sc.Text()); m != nil {
			if q := queuedAs.FindStringSubmatch(m[1]); q != nil {
				return q[1]
			}
		}
	}
	return ""
}

// String formats the session for failure messages.
func (s SwaksSession) String() string {
	return fmt.Sprintf("swaks %s: exit %d\n%s%s", strings.Join(s.Args, " "), s.Code, s.Stdout, s.Stderr)
}
