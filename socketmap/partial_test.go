package socketmap

import (
	"testing"
	"time"
)

// TestServerAnswersBeforePartialRequest: a complete request is answered at
// once even when the start of the next one arrived with it, and the answer
// is never lost when the connection then ends (read timeout, end of
// stream). The server used to hold the answer until the next request was
// complete, and dropped it at the idle or read timeout.
func TestServerAnswersBeforePartialRequest(t *testing.T) {
	const want = "OK secure match=nexthop"
	tests := []struct {
		name string
		run  func(t *testing.T, c *client)
	}{
		{"rest of the next request follows", func(t *testing.T, c *client) {
			c.send("23:tls_policy bank.example,2")
			if got := c.replyWithin(2 * time.Second); got != want {
				t.Fatalf("first reply %q, want %q", got, want)
			}
			c.send("3:tls_policy bank.example,")
			if got := c.replyWithin(2 * time.Second); got != want {
				t.Fatalf("second reply %q, want %q", got, want)
			}
		}},
		{"next request never completes", func(t *testing.T, c *client) {
			c.send("23:tls_policy bank.example,23:tls_")
			if got := c.replyWithin(2 * time.Second); got != want {
				t.Fatalf("reply %q, want %q", got, want)
			}
			// ReadTimeout (500 ms) ends the connection.
			c.expectClosed(3 * time.Second)
		}},
		{"end of stream inside the next request", func(t *testing.T, c *client) {
			c.send("23:tls_policy bank.example,2")
			if err := c.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := c.replyWithin(2 * time.Second); got != want {
				t.Fatalf("reply %q, want %q", got, want)
			}
			if got := c.replyWithin(2 * time.Second); got != "PERM bad request" {
				t.Fatalf("then %q, want PERM bad request", got)
			}
			c.expectClosed(3 * time.Second)
		}},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					s := &Server{Handler: &fakeHandler{}, ReadTimeout: 500 * time.Millisecond}
					addr := serveTransport(t, tr.network, tr.plain, s)
					tt.run(t, dial(t, tr.network, addr))
				})
			}
		})
	}
}

// replyWithin reads one reply netstring, failing if none comes within d.
func (c *client) replyWithin(d time.Duration) string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(d))
	p, err := c.d.Next()
	if err != nil {
		c.t.Fatalf("no reply within %v: %v", d, err)
	}
	return string(p)
}
