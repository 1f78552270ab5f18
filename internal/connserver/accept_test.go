package connserver

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// flakyListener fails its first Accepts with errs, then accepts.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// TestAcceptErrorsRetried: an Accept error other than a closed listener
// (out of descriptors, or one no list foresaw, such as EPROTO) is retried
// with a back-off, and the server goes on serving.
func TestAcceptErrorsRetried(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner, errs: []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)},
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPROTO)},
	}}
	s := &Server{}
	logs := newServer(s, newLineHandler(t))
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		_ = s.Shutdown(t.Context())
		<-served
	})
	c := dial(t, inner.Addr().String())
	if got := c.ask("after"); got != "OK after" {
		t.Fatalf("answer after accept errors: %q", got)
	}
	waitFor(t, "both errors logged", func() bool {
		return strings.Count(logs.String(), "accept failed; retrying") == 2
	})
}
