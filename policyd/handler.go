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
//
// A Request the Server passes to a Handler, and its Attrs map, belong to
// the Server: they are valid until Check returns, then reused for the
// connection's next request (see Handler). The strings in the map are
// ordinary immutable strings and stay valid; decoded names and values
// share one backing string per request, so a Handler keeping a value for
// long (e.g. as a map key) should strings.Clone it.
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
//
// Check must not keep req, or req.Attrs, once it has returned: neither
// itself nor in a goroutine it started, a closure or a log record it
// defers. The Server clears and refills the same map for the connection's
// next request (Decoder.Decode), which spares a map per request. Copy what
// must outlive the call: the strings themselves may be kept (see Request).
// Wrappers that observe requests (metrics, logging) are bound by the same
// rule.
type Handler interface {
	Check(ctx context.Context, req *Request) (Action, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) (Action, error)

// Check calls f.
func (f HandlerFunc) Check(ctx context.Context, req *Request) (Action, error) { return f(ctx, req) }

var _ Handler = HandlerFunc(nil)
