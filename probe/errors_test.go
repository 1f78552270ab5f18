package probe

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestProbeErrorsSayWhatHappened: an error names its real cause. The
// prober's own cap on server text is not "connection closed by server";
// a server that accepts STARTTLS and then never completes the handshake
// is a TLS failure that timed out, not "no STARTTLS".
func TestProbeErrorsSayWhatHappened(t *testing.T) {
	z, f := loopback(t)
	z.MX(t, "endless.test", 10, "mx.endless.test", "127.0.0.2")
	f.Raw(t, "127.0.0.2", func(c net.Conn) {
		line := []byte("220-" + strings.Repeat("x", 1000) + "\r\n")
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	z.MX(t, "silent.test", 10, "mx.silent.test", "127.0.0.3")
	f.Raw(t, "127.0.0.3", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		c.Write([]byte("220 mx.silent.test\r\n"))
		if _, err := r.ReadString('\n'); err != nil { // EHLO
			return
		}
		c.Write([]byte("250-mx.silent.test\r\n250 STARTTLS\r\n"))
		if _, err := r.ReadString('\n'); err != nil { // STARTTLS
			return
		}
		c.Write([]byte("220 go ahead\r\n"))
		_, _ = r.ReadByte()
		time.Sleep(3 * time.Second) // never answers the ClientHello
	})
	z.MX(t, "closes.test", 10, "mx.closes.test", "127.0.0.4")
	f.Raw(t, "127.0.0.4", func(c net.Conn) {
		c.Write([]byte("220-mx.closes.test\r\n"))
		c.Close()
	})
	p := testProber(t, z, f, func(c *Config) { c.Timeout = time.Second })

	for _, tt := range []struct {
		target, status, class, want, not string
		starttls                         bool
	}{
		{"endless.test", StatusUnreachable, ClassProtocol, "waiting for banner: the server sent more than 64 KiB of text, the prober's limit for one session", "closed by server", false},
		{"silent.test", StatusTLSFailed, ClassHandshake, "TLS handshake after STARTTLS timed out (no handshake within 1s)", "", true},
		{"closes.test", StatusUnreachable, ClassProtocol, "waiting for banner: connection closed by server", "", false},
	} {
		r, err := p.Probe(context.Background(), tt.target)
		if err != nil {
			t.Fatal(err)
		}
		a := r.MX[0].Addrs[0]
		if r.Status != tt.status || a.ErrorClass != tt.class || a.Error != tt.want || a.STARTTLS != tt.starttls {
			t.Errorf("%s: status %q, class %q, error %q, starttls %v; want %q, %q, %q, %v",
				tt.target, r.Status, a.ErrorClass, a.Error, a.STARTTLS, tt.status, tt.class, tt.want, tt.starttls)
		}
		if tt.not != "" && strings.Contains(a.Error+r.Reason, tt.not) {
			t.Errorf("%s: %q names the wrong cause", tt.target, a.Error)
		}
		if tt.status == StatusTLSFailed && !strings.Contains(r.Reason, tt.want) {
			t.Errorf("%s: reason %q does not say what failed", tt.target, r.Reason)
		}
	}
}
