package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// recipients splits MailTo into addresses.
func (a *Notifier) recipients() []string {
	var to []string
	for _, r := range strings.Split(a.cfg.MailTo, ",") {
		if r = strings.TrimSpace(r); r != "" {
			to = append(to, r)
		}
	}
	return to
}

// sendMail sends one digest through the relay with go-smtp's client. ctx
// bounds the whole session: when it ends the connection is closed.
func (a *Notifier) sendMail(ctx context.Context, alerts []Alert) error {
	to := a.recipients()
	msg := composeMail(alerts, a.cfg.From, to, a.cfg.Hostname, a.cfg.Interval, time.Now())
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", a.cfg.SMTP)
	if err != nil {
		return fmt.Errorf("mail relay %s: %w", a.cfg.SMTP, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	defer c.Close()
	// go-smtp sets its own per-command deadlines; keep them within ctx.
	if dl, ok := ctx.Deadline(); ok {
		c.CommandTimeout = time.Until(dl)
		c.SubmissionTimeout = time.Until(dl)
	}
	if err := c.Hello(a.cfg.Hostname); err != nil {
		return fmt.Errorf("mail relay %s: EHLO: %w", a.cfg.SMTP, err)
	}
	if err := c.SendMail(a.cfg.From, to, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("mail relay %s: %w", a.cfg.SMTP, ctxErr(ctx, err))
	}
	if err := c.Quit(); err != nil {
		// The message was accepted (DATA answered 250): a failed QUIT
		// must not send it twice.
		a.log.Debug("mail relay: QUIT", "error", err)
	}
	return nil
}

// ctxErr prefers the context's error when the context ended the session.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// Payload is the JSON document POSTed to the webhook for each digest.
type Payload struct {
	Source string    `json:"source"` // always "tlspolicyd"
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	// Text is the digest in a few lines, for chat webhooks (Slack,
	// Mattermost and others display a "text" field).
	Text   string  `json:"text"`
	Alerts []Alert `json:"alerts"`
}

func (a *Notifier) payload(alerts []Alert) Payload {
	var b strings.Builder
	b.WriteString(digestSubject(alerts))
	for _, al := range alerts {
		fmt.Fprintf(&b, "\n• %s: %s", al.Title, clean(al.Reason))
		if al.Repeats > 1 {
			fmt.Fprintf(&b, " (%d times)", al.Repeats)
		}
	}
	return Payload{Source: "tlspolicyd", Host: a.cfg.Hostname, Time: time.Now().UTC(), Text: b.String(), Alerts: alerts}
}

// postWebhook POSTs one digest. A 2xx answer is success; 408, 429 and 5xx
// are retried; any other 4xx means the receiver will never take it.
func (a *Notifier) postWebhook(ctx context.Context, alerts []Alert) error {
	body, err := json.Marshal(a.payload(alerts))
	if err != nil {
		return permanentError{fmt.Errorf("webhook: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return permanentError{errors.New("webhook: invalid URL")} // the URL may hold a secret: not logged
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tlspolicyd")
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		// Not the *url.Error itself: webhook URLs often carry a secret
		// token, which must not end up in logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return permanentError{fmt.Errorf("webhook: %s", resp.Status)}
	}
	return fmt.Errorf("webhook: %s", resp.Status)
}
