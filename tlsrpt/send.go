package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// MediaType is the report's media type once gzipped (§5.3, §6.4).
const MediaType = "application/tlsrpt+gzip"

// Encode returns the report's JSON and its gzip.
func Encode(r Report) (js, gz []byte, err error) {
	js, err = json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("tlsrpt: %w", err)
	}
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(js); err != nil {
		return nil, nil, fmt.Errorf("tlsrpt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, nil, fmt.Errorf("tlsrpt: %w", err)
	}
	return js, b.Bytes(), nil
}

// Sender delivers reports: mailto: through a relay, https: by POST.
type Sender struct {
	SMTP      string // the relay, host:port (no STARTTLS, no authentication: a local Postfix)
	From      string // envelope and header sender
	Submitter string // this host's name
	HTTP      *http.Client
}

// Send delivers the gzipped report gz to one rua URI.
func (s *Sender) Send(ctx context.Context, rua string, r Report, gz []byte) error {
	u, err := url.Parse(rua)
	if err != nil {
		return fmt.Errorf("tlsrpt: rua %q: %w", rua, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "mailto":
		to, _, _ := strings.Cut(u.Opaque, "?")
		if to, err = url.PathUnescape(to); err != nil {
			return fmt.Errorf("tlsrpt: rua %q: %w", rua, err)
		}
		return s.mail(ctx, to, r, gz)
	case "https":
		return s.post(ctx, rua, gz)
	}
	return fmt.Errorf("tlsrpt: rua %q: unsupported scheme", rua)
}

func (s *Sender) post(ctx context.Context, rua string, gz []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rua, bytes.NewReader(gz))
	if err != nil {
		return fmt.Errorf("tlsrpt: %w", err)
	}
	req.Header.Set("Content-Type", MediaType)
	hc := s.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("tlsrpt: POST %s: %w", rua, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("tlsrpt: POST %s: %s", rua, resp.Status)
	}
	return nil
}

func (s *Sender) mail(ctx context.Context, to string, r Report, gz []byte) error {
	msg := Message(r, s.From, to, s.Submitter, gz, time.Now())
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.SMTP)
	if err != nil {
		return fmt.Errorf("tlsrpt: mail relay %s: %w", s.SMTP, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello(s.Submitter); err != nil {
		return fmt.Errorf("tlsrpt: mail relay %s: EHLO: %w", s.SMTP, err)
	}
	if err := c.SendMail(s.From, []string{to}, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("tlsrpt: mail relay %s: %w", s.SMTP, err)
	}
	_ = c.Quit()
	return nil
}

// Message is the report mail of RFC 8460 §5.3: a multipart/report with
// report-type "tlsrpt", the subject "Report Domain: D Submitter: S
// Report-ID: <ID>", the TLS-Report-Domain and TLS-Report-Submitter
// headers, a text part and the gzipped report as application/tlsrpt+gzip.
func Message(r Report, from, to, submitter string, gz []byte, now time.Time) []byte {
	domain := r.Policies[0].Policy.Domain
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	boundary := "tlsrpt-" + hex.EncodeToString(rnd[:])
	var b strings.Builder
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", from)
	h("To", to)
	h("Date", now.UTC().Format(time.RFC1123Z))
	h("Subject", fmt.Sprintf("Report Domain: %s Submitter: %s Report-ID: <%s>", domain, submitter, r.ReportID))
	h("Message-ID", fmt.Sprintf("<%s.%s@%s>", now.UTC().Format("20060102150405"), hex.EncodeToString(rnd[:6]), submitter))
	h("TLS-Report-Domain", domain)
	h("TLS-Report-Submitter", submitter)
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/report; report-type="tlsrpt"; boundary="`+boundary+`"`)
	b.WriteString("\r\n--" + boundary + "\r\n")
	h("Content-Type", `text/plain; charset="us-ascii"`)
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "This is an aggregate TLS report (RFC 8460) from %s for %s,\r\n%s to %s UTC.\r\n",
		submitter, domain, r.DateRange.Start.Format(time.DateTime), r.DateRange.End.Format(time.DateTime))
	b.WriteString("\r\n--" + boundary + "\r\n")
	h("Content-Type", MediaType)
	h("Content-Transfer-Encoding", "base64")
	h("Content-Disposition", `attachment; filename="`+r.FileName(submitter)+`"`)
	b.WriteString("\r\n")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	b.WriteString("--" + boundary + "--\r\n")
	return []byte(b.String())
}
