package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
)

// maxSessionBytes caps what one SMTP session may make us read in clear
// text: a hostile server must not make the prober buffer without bound
// (textproto has no line length limit of its own).
const maxSessionBytes = 64 << 10

// errTextCap ends a read once the session reached maxSessionBytes: the
// prober stopped reading, not the server.
var errTextCap = fmt.Errorf("the server sent more than %d KiB of text, the prober's limit for one session", maxSessionBytes>>10)

// capReader reads at most n bytes from r, then fails with errTextCap.
type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errTextCap
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= int64(k)
	return k, err
}

// quitWait is how long we wait for the reply to QUIT: it only tidies up.
const quitWait = 2 * time.Second

// session is one probe of one address.
type session struct {
	p       *Prober
	mxHost  string
	nexthop string
	addr    netip.Addr
	port    int
	res     *AddrResult
}

// stepError is a failed step: class is one of the Class* constants.
type stepError struct {
	class string
	err   error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func fail(class, format string, args ...any) error {
	return &stepError{class: class, err: fmt.Errorf(format, args...)}
}

// ioFail classifies an I/O error of a step: a deadline is a timeout, the
// rest (EOF, reset) a protocol failure.
func ioFail(step string, err error) error {
	class := ClassProtocol
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		class = ClassTimeout
	}
	switch {
	case errors.Is(err, errTextCap):
		class = ClassProtocol
	case errors.Is(err, io.EOF):
		err = errors.New("connection closed by server")
	}
	return &stepError{class: class, err: fmt.Errorf("%s: %w", step, err)}
}

// probeAddr runs one SMTP session (banner, EHLO, STARTTLS, handshake, EHLO,
// QUIT) with a deadline on every step, and records what happened in res.
func (p *Prober) probeAddr(ctx context.Context, mxHost, nexthop string, addr netip.Addr, port int) AddrResult {
	res := AddrResult{Addr: addr.String(), Port: port}
	start := time.Now()
	s := &session{p: p, mxHost: mxHost, nexthop: nexthop, addr: addr, port: port, res: &res}
	err := s.run(ctx)
	res.Duration = time.Since(start)
	if err != nil {
		var se *stepError
		if errors.As(err, &se) {
			res.ErrorClass = se.class
		} else {
			res.ErrorClass = ClassProtocol
		}
		res.Error = err.Error()
	}
	res.cleanText()
	p.log.LogAttrs(ctx, slog.LevelDebug, "probed address",
		slog.String("host", mxHost), slog.String("addr", res.Addr), slog.String("class", res.ErrorClass),
		slog.Bool("starttls", res.STARTTLS), slog.Duration("took", res.Duration))
	return res
}

func (s *session) deadline(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(s.p.cfg.Timeout))
}

func (s *session) run(ctx context.Context) error {
	d := net.Dialer{Timeout: s.p.cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", hostPort(s.addr, s.port))
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return &stepError{ClassTimeout, fmt.Errorf("connect: %w", err)}
		}
		return &stepError{ClassConnect, fmt.Errorf("connect: %w", err)}
	}
	defer conn.Close()
	// Closing the connection when ctx ends unblocks any read or write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	tp := newTextConn(conn)

	// Banner (RFC 5321 §4.3.1: 220, or 554 / 421 when refusing).
	s.deadline(conn)
	code, msg, err := tp.ReadResponse(0)
	if err != nil {
		return ioFail("waiting for banner", err)
	}
	s.res.Banner = msg
	switch {
	case code == 220:
	case code >= 400 && code < 500:
		s.quit(tp, conn)
		return fail(ClassBannerTemp, "banner: %d %s", code, safetext.FirstLine(msg))
	case code >= 500 && code < 600:
		s.quit(tp, conn)
		return fail(ClassBannerRefused, "banner: %d %s", code, safetext.FirstLine(msg))
	default:
		return fail(ClassProtocol, "banner: unexpected reply %d %s", code, safetext.FirstLine(msg))
	}

	// EHLO.
	caps, err := s.ehlo(tp, conn)
	if err != nil {
		return err
	}
	s.res.Reached = true
	if caps == nil { // EHLO refused: Postfix falls back to HELO, without TLS
		s.quit(tp, conn)
		return nil
	}
	s.res.STARTTLS = caps["STARTTLS"]
	if !s.res.STARTTLS {
		s.quit(tp, conn)
		return nil
	}

	// STARTTLS (RFC 3207 §4).
	s.deadline(conn)
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return ioFail("sending STARTTLS", err)
	}
	code, msg, err = tp.ReadResponse(0)
	if err != nil {
		return ioFail("STARTTLS", err)
	}
	if code != 220 {
		s.quit(tp, conn)
		return fail(ClassSTARTTLS, "STARTTLS refused: %d %s", code, safetext.FirstLine(msg))
	}
	// Bytes that came after the 220, before the handshake, belong to no
	// command: the mark of a plaintext injection (CVE-2011-0411) on the
	// path. They are discarded (the TLS session starts on the raw socket,
	// not on our read buffer) and noted.
	if n := tp.br.Buffered(); n > 0 {
		s.res.Warning = fmt.Sprintf("%d byte(s) of plaintext after the STARTTLS reply discarded (possible injection)", n)
	}

	// TLS handshake. InsecureSkipVerify so a bad certificate is recorded,
	// not fatal (we verify afterwards); TLS 1.0 and the cipher suites of
	// postfixCipherSuites allowed so that a server is measured as the
	// Postfix SMTP client would see it; no SNI, as the Postfix SMTP client
	// sends none outside DANE, so we see the certificate Postfix would see.
	tcfg := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified in inspectTLS
		MinVersion:         tls.VersionTLS10,
		CipherSuites:       postfixCipherSuites,
	}
	tconn := tls.Client(conn, tcfg)
	hctx, cancel := context.WithTimeout(ctx, s.p.cfg.Timeout)
	s.deadline(conn)
	err = tconn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			if ctx.Err() != nil {
				return &stepError{ClassHandshake, fmt.Errorf("TLS handshake after STARTTLS: probe cancelled: %w", ctx.Err())}
			}
			return fail(ClassHandshake, "TLS handshake after STARTTLS timed out (no handshake within %s)", s.p.cfg.Timeout)
		}
		return &stepError{ClassHandshake, fmt.Errorf("TLS handshake after STARTTLS: %w", err)}
	}
	s.res.TLS = inspectTLS(tconn.ConnectionState(), s.p.cfg.Roots, time.Now(), s.mxHost, s.nexthop)

	// EHLO again over TLS, as Postfix does (RFC 3207 §4.2: the server
	// forgets what it knew), then QUIT.
	ttp := newTextConn(tconn)
	caps, err = s.ehlo(ttp, conn)
	if err == nil && caps == nil {
		err = fail(ClassAfterTLS, "EHLO refused after STARTTLS")
	}
	if err != nil {
		var se *stepError
		if errors.As(err, &se) {
			se.class = ClassAfterTLS
		}
		return err
	}
	s.quit(ttp, conn)
	return nil
}

// postfixCipherSuites are the TLS 1.0–1.2 cipher suites the prober offers:
// those of Go's implementation that the Postfix SMTP client offers at its
// mandatory levels (smtp_tls_mandatory_ciphers = medium, i.e.
// "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH") when linked with OpenSSL 3.
// The verdict must say whether Postfix would deliver, so a server Postfix
// can talk to must not fail here, and one it cannot talk to must not pass:
//
//   - every suite of tls.CipherSuites() (ECDHE with AES-GCM, AES-CBC,
//     ChaCha20-Poly1305);
//   - from tls.InsecureCipherSuites(), the RSA key exchange suites
//     (AES128-SHA, AES256-SHA, AES128-SHA256, AES128-GCM-SHA256,
//     AES256-GCM-SHA384) and ECDHE with AES-128-CBC-SHA256: all in
//     OpenSSL's HIGH. Go leaves them out by default (RSA key exchange
//     since Go 1.22), so without them a TLS 1.2 server offering only
//     RSA key exchange would fail the handshake although Postfix
//     negotiates AES128-GCM-SHA256 with it;
//   - not RC4 nor 3DES: OpenSSL 3 (and 1.1.x) builds them only with
//     enable-weak-ssl-ciphers, which distributions leave off (`openssl
//     ciphers -v 'ALL:COMPLEMENTOFALL:@SECLEVEL=0'` lists neither), so the
//     "+RC4" and MEDIUM of Postfix's list select nothing and a server
//     offering only those fails with Postfix too.
//
// TLS 1.3 suites are not configurable in Go; all three are offered, as
// OpenSSL does by default. Go orders the suites itself.
var postfixCipherSuites = func() []uint16 {
	var ids []uint16
	for _, cs := range tls.CipherSuites() {
		ids = append(ids, cs.ID)
	}
	return append(ids,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	)
}()

// textConn is one SMTP command/reply channel. The reader is ours, not
// textproto.Conn's, so that we can see bytes buffered after a reply.
type textConn struct {
	br *bufio.Reader
	*textproto.Reader
	*textproto.Writer
}

func newTextConn(c io.ReadWriter) *textConn {
	br := bufio.NewReader(&capReader{r: c, n: maxSessionBytes})
	return &textConn{br: br, Reader: textproto.NewReader(br), Writer: textproto.NewWriter(bufio.NewWriter(c))}
}

// ehlo sends EHLO and returns the advertised extensions (upper-cased
// keywords), or nil caps and no error when EHLO was refused with 5xx.
func (s *session) ehlo(tp *textConn, conn net.Conn) (map[string]bool, error) {
	s.deadline(conn)
	if err := tp.PrintfLine("EHLO %s", s.p.cfg.HELO); err != nil {
		return nil, ioFail("sending EHLO", err)
	}
	code, msg, err := tp.ReadResponse(0)
	if err != nil {
		return nil, ioFail("EHLO", err)
	}
	switch {
	case code == 250:
	case code >= 400 && code < 500:
		s.quit(tp, conn)
		return nil, fail(ClassEHLOTemp, "EHLO: %d %s", code, safetext.FirstLine(msg))
	case code >= 500 && code < 600:
		return nil, nil
	default:
		return nil, fail(ClassProtocol, "EHLO: unexpected reply %d %s", code, safetext.FirstLine(msg))
	}
	caps := map[string]bool{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] { // the first line is the greeting
		if f := strings.Fields(l); len(f) > 0 {
			caps[strings.ToUpper(f[0])] = true
		}
	}
	return caps, nil
}

// quit ends the session politely; its outcome does not matter.
func (s *session) quit(tp *textConn, conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(min(quitWait, s.p.cfg.Timeout)))
	if err := tp.PrintfLine("QUIT"); err != nil {
		return
	}
	_, _, _ = tp.ReadResponse(0)
}

// maxTextLen caps one text field of a result (banner, error, certificate
// name): the remote server chose it.
const maxTextLen = 4096

// printable returns s as safe text (internal/safetext), line feeds kept
// if keepNL, cut to maxTextLen bytes. Banners, replies and certificate
// names come from the remote server and go to logs, events, alert mails,
// the status page and terminals (the probe command).
func printable(s string, keepNL bool) string {
	if keepNL {
		return safetext.Text(s, maxTextLen)
	}
	return safetext.Line(s, maxTextLen)
}

// cleanText makes every text field the remote server could influence
// printable (see printable).
func (a *AddrResult) cleanText() {
	a.Banner = printable(a.Banner, true)
	a.Warning = printable(a.Warning, false)
	a.Error = printable(a.Error, false)
	if t := a.TLS; t != nil {
		t.TrustError = printable(t.TrustError, false)
		t.Verify.Reason = printable(t.Verify.Reason, false)
		t.Secure.Reason = printable(t.Secure.Reason, false)
		for i := range t.Chain {
			c := &t.Chain[i]
			c.Subject = printable(c.Subject, false)
			c.Issuer = printable(c.Issuer, false)
			// A copy: the slice belongs to the parsed certificate.
			names := make([]string, len(c.DNSNames))
			for j, n := range c.DNSNames {
				names[j] = printable(n, false)
			}
			c.DNSNames = names
		}
	}
}
