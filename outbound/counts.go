// Package outbound turns what Postfix logged about its deliveries (package
// maillog) into the outbound TLS report per destination domain, the alerts
// on mail really stuck behind a TLS policy ("N messages to example.com
// deferred by TLS policy since T") with their "delivered again" notice, and
// the daily per-domain session counts TLS-RPT (RFC 8460) reports. Its state
// and the log position it reflects are saved together, so a restart
// neither loses nor counts a line twice.
package outbound

import (
	"strings"

	"github.com/tlspolicyd/tlspolicyd/maillog"
)

// Counts are one destination domain's deliveries (status lines: one per
// recipient and attempt) over some period.
type Counts struct {
	Messages  uint64 `json:"messages"` // status lines: sent + deferred + bounced + other
	Sent      uint64 `json:"sent"`
	Deferred  uint64 `json:"deferred"`
	Bounced   uint64 `json:"bounced"`
	TLS       uint64 `json:"tls"` // sent over TLS
	Verified  uint64 `json:"verified"`
	Trusted   uint64 `json:"trusted"`
	Untrusted uint64 `json:"untrusted"`
	Anonymous uint64 `json:"anonymous"`
	// Versions counts the TLS versions of mail sent over TLS.
	Versions map[string]uint64 `json:"versions,omitempty"`
	// Deferrals counts deferrals (and bounces) by reason
	// (maillog.Reason: starttls_not_offered, certificate_not_verified, …).
	Deferrals map[string]uint64 `json:"deferrals,omitempty"`

	// TLS-RPT (RFC 8460): SMTP sessions that negotiated TLS and were not
	// failed by the policy, sessions that failed (or ran in clear), and
	// what failed.
	SessionsOK     uint64    `json:"sessions_ok,omitempty"`
	SessionsFailed uint64    `json:"sessions_failed,omitempty"`
	Failures       []Failure `json:"failures,omitempty"`
}

// Failure is one kind of failed session towards one MX, as TLS-RPT's
// failure-details want it.
type Failure struct {
	ResultType string `json:"result_type"` // RFC 8460 §4.3, e.g. starttls-not-supported
	MXHost     string `json:"mx_host,omitempty"`
	MXAddr     string `json:"mx_addr,omitempty"`
	Detail     string `json:"detail,omitempty"`
	Count      uint64 `json:"count"`
}

// maxFailures bounds the distinct failures kept per domain and day.
const maxFailures = 50

// add counts one delivery.
func (c *Counts) add(d *maillog.Delivery) {
	c.Messages++
	switch d.Status {
	case "sent":
		c.Sent++
		if d.TLS != nil {
			c.TLS++
			switch d.TLS.Trust {
			case maillog.Verified:
				c.Verified++
			case maillog.Trusted:
				c.Trusted++
			case maillog.Untrusted:
				c.Untrusted++
			case maillog.Anonymous:
				c.Anonymous++
			}
			if c.Versions == nil {
				c.Versions = map[string]uint64{}
			}
			c.Versions[d.TLS.Protocol]++
		}
	case "deferred":
		c.Deferred++
	case "bounced", "expired":
		c.Bounced++
	}
	if d.Status != "sent" && d.Reason != maillog.ReasonNone {
		if c.Deferrals == nil {
			c.Deferrals = map[string]uint64{}
		}
		c.Deferrals[string(d.Reason)]++
	}
	if !d.NewSession {
		return
	}
	switch rt := ResultType(d); {
	case rt != "":
		c.SessionsFailed++
		c.addFailure(Failure{ResultType: rt, MXHost: d.Relay.Host, MXAddr: d.Relay.Addr, Detail: d.VerifyDetail, Count: 1})
	case d.TLS != nil:
		c.SessionsOK++
	}
}

func (c *Counts) addFailure(f Failure) {
	for i := range c.Failures {
		g := &c.Failures[i]
		if g.ResultType == f.ResultType && g.MXHost == f.MXHost && g.MXAddr == f.MXAddr && g.Detail == f.Detail {
			g.Count += f.Count
			return
		}
	}
	if len(c.Failures) >= maxFailures {
		f.MXHost, f.MXAddr, f.Detail = "", "", ""
		for i := range c.Failures {
			if g := &c.Failures[i]; g.ResultType == f.ResultType && g.MXHost == "" && g.Detail == "" {
				g.Count += f.Count
				return
			}
		}
		if len(c.Failures) >= maxFailures+10 {
			return
		}
	}
	c.Failures = append(c.Failures, f)
}

// merge adds o to c.
func (c *Counts) merge(o *Counts) {
	c.Messages += o.Messages
	c.Sent += o.Sent
	c.Deferred += o.Deferred
	c.Bounced += o.Bounced
	c.TLS += o.TLS
	c.Verified += o.Verified
	c.Trusted += o.Trusted
	c.Untrusted += o.Untrusted
	c.Anonymous += o.Anonymous
	for k, v := range o.Versions {
		if c.Versions == nil {
			c.Versions = map[string]uint64{}
		}
		c.Versions[k] += v
	}
	for k, v := range o.Deferrals {
		if c.Deferrals == nil {
			c.Deferrals = map[string]uint64{}
		}
		c.Deferrals[k] += v
	}
	c.SessionsOK += o.SessionsOK
	c.SessionsFailed += o.SessionsFailed
	for _, f := range o.Failures {
		c.addFailure(f)
	}
}

// ResultType is the RFC 8460 §4.3 result type of a delivery's session, or
// "" when the session did not fail. A session in clear (the MX offered no
// STARTTLS) is starttls-not-supported. Deferrals caused on this side (the
// policy lookup, the address resolver) are no session with the MX: "".
func ResultType(d *maillog.Delivery) string {
	switch d.Reason {
	case maillog.ReasonNotOffered:
		return "starttls-not-supported"
	case maillog.ReasonNotVerified:
		return certResultType(d.VerifyDetail)
	case maillog.ReasonHandshake:
		return "validation-failure"
	case maillog.ReasonTLSA:
		return "tlsa-invalid"
	case maillog.ReasonNone:
		if d.TLS == nil && d.Status == "sent" && d.Relay.Addr != "" {
			return "starttls-not-supported"
		}
	}
	return ""
}

// certResultType maps the text of Postfix's "certificate verification
// failed for …" line (OpenSSL's reason) to a result type.
func certResultType(detail string) string {
	d := strings.ToLower(detail)
	switch {
	case strings.Contains(d, "expired"), strings.Contains(d, "not yet valid"):
		return "certificate-expired"
	case strings.Contains(d, "name mismatch"), strings.Contains(d, "hostname"), strings.Contains(d, "subject alternative name"), strings.Contains(d, "does not match"):
		return "certificate-host-mismatch"
	case strings.Contains(d, "self-signed"), strings.Contains(d, "self signed"), strings.Contains(d, "untrusted issuer"), strings.Contains(d, "unable to get local issuer"), strings.Contains(d, "not trusted"):
		return "certificate-not-trusted"
	}
	return "validation-failure"
}
