package socketmap

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// Client is a socketmap client on one persistent connection, as Postfix's
// dict_sockmap uses it: one request at a time. It serves `tlspolicyd query
// --server` and tests. A Client is not safe for concurrent use.
type Client struct {
	nc      net.Conn
	d       *Decoder
	timeout time.Duration
	buf     []byte
}

// Dial connects to a socketmap server at addr ("host:port", "[::1]:port" or
// "unix:/path", the forms the daemon listens on). timeout bounds the
// connect and, later, each Lookup without a context deadline of its own
// (0 means no bound beyond ctx).
func Dial(ctx context.Context, addr string, timeout time.Duration) (*Client, error) {
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
	}
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var dialer net.Dialer
	nc, err := dialer.DialContext(dctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("socketmap: dial %s: %w", addr, err)
	}
	return &Client{nc: nc, d: NewDecoder(bufio.NewReader(nc), MaxReplySize), timeout: timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.nc.Close() }

// Lookup sends "<mapName> <key>" and returns the server's reply. TEMP,
// TIMEOUT and PERM replies are returned as a Reply, not as an error; an
// error means no valid reply was received, and the Client should then be
// closed.
func (c *Client) Lookup(ctx context.Context, mapName, key string) (Reply, error) {
	if mapName == "" || strings.Contains(mapName, " ") {
		return Reply{}, fmt.Errorf("socketmap: invalid map name %q", mapName)
	}
	deadline, ok := ctx.Deadline()
	if c.timeout > 0 {
		if t := time.Now().Add(c.timeout); !ok || t.Before(deadline) {
			deadline = t
		}
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		return Reply{}, fmt.Errorf("socketmap: lookup: %w", err)
	}
	// Cancelling ctx interrupts the blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.buf = AppendNetstring(c.buf[:0], mapName+" "+key)
	if _, err := c.nc.Write(c.buf); err != nil {
		return Reply{}, c.ioErr(ctx, err)
	}
	p, err := c.d.Next()
	if err != nil {
		return Reply{}, c.ioErr(ctx, err)
	}
	return ParseReply(p)
}

func (c *Client) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("socketmap: lookup: %w", ctx.Err())
	}
	return fmt.Errorf("socketmap: lookup: %w", err)
}

// ParseReply decodes a reply payload ("OK data", "NOTFOUND ", "TEMP
// reason", …) the way Postfix's dict_sockmap does: the status word is what
// precedes the first space. An unknown status word is a *ProtocolError.
func ParseReply(b []byte) (Reply, error) {
	word, data, _ := strings.Cut(string(b), " ")
	for _, st := range []Status{StatusOK, StatusNotFound, StatusTemp, StatusTimeout, StatusPerm} {
		if word == st.String() {
			if st == StatusNotFound {
				data = ""
			}
			return Reply{Status: st, Data: data}, nil
		}
	}
	return Reply{}, &ProtocolError{Reason: fmt.Sprintf("unknown reply type %.20q", word)}
}
