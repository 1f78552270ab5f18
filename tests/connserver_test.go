package tests

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestSocketmapAnswerBeforePartialRequest: the daemon answers a complete
// socketmap request at once even when the first byte of the next request
// came with it; it used to hold the answer until the idle timeout closed
// the connection, and the answer was never sent.
func TestSocketmapAnswerBeforePartialRequest(t *testing.T) {
	d, _ := startDaemon(t, "outbound:\n  bank.example: encrypt\n", false)
	c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "23:tls_policy bank.example,2"); err != nil {
		t.Fatal(err)
	}
	const want = "10:OK encrypt,"
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("no answer within 3 s with a partial request behind it: read %q, %v", got[:n], err)
	}
	if string(got) != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
	// The rest of the next request is answered too.
	if _, err := io.WriteString(c, "3:tls_policy bank.example,"); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("second answer %q, %v; want %q", got[:n], err, want)
	}
}
