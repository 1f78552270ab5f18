// Package policyd implements the server side of Postfix's SMTP access
// policy delegation protocol (SMTPD_POLICY_README): a request is a block of
// "name=value" lines ended by an empty line, the reply is "action=<text>"
// followed by an empty line, over a persistent connection.
//
// The package knows nothing of TLS policy: it decodes requests, calls a
// Handler and writes the Handler's Action. An error or panic in the Handler
// becomes a temporary deferral ("450 4.7.10 …"), never DUNNO or OK: the
// server fails closed.
//
// A client can hold little: lines and requests are capped (MaxLineSize,
// MaxRequestSize) before they are buffered, a request must arrive within
// ReadTimeout of its first byte and a reply be taken within ReadTimeout,
// idle connections close after IdleTimeout, and MaxConns caps each
// listener's connections. At the cap a new connection replaces the
// longest idle one, else the one whose request has been arriving for
// longer than SlowRequest (a slow-loris client), else it is refused at
// once; the log says so at most once per 10 s per kind.
package policyd

import "context"

// Request is one policy delegation request: the attributes Postfix sent,
// by name. Unknown attributes are kept and may be ignored by the Handler.
// Decoded names and values share one backing string per request: a
// Handler keeping a value for long (e.g. as a map key) should
// strings.Clone it.
type Request struct {
	Attrs map[string]string
}

// Get returns the value of attribute name, or "" when it was not sent.
func (r *Request) Get(name string) string { return r.Attrs[name] }

// Action is the text sent back as "action=<Action>", e.g. "DUNNO",
// "450 4.7.10 TLS is required …", "PREPEND X-TLS-Policy: would defer".
type Action string

// Handler decides the action for one request. A non-nil error is answered
// with a temporary deferral (fail closed).
type Handler interface {
	Check(ctx context.Context, req *Request) (Action, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) (Action, error)

// Check calls f.
func (f HandlerFunc) Check(ctx context.Context, req *Request) (Action, error) { return f(ctx, req) }

var _ Handler = HandlerFunc(nil)
