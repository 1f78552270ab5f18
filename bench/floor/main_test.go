package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestServe(t *testing.T) {
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@b.example\n\n"
	for _, tc := range []struct {
		name    string
		serve   func(*bufio.Reader, io.Writer) error
		in      string
		want    string
		wantErr string // "" = EOF after the input
	}{
		{"socketmap one", serveSocketmap, "23:tls_policy bank.example,", "9:NOTFOUND ,", ""},
		{"socketmap pipelined", serveSocketmap, "23:tls_policy bank.example,20:tls_policy x.example,", "9:NOTFOUND ,9:NOTFOUND ,", ""},
		{"socketmap bad length", serveSocketmap, "x5:hello,", "", "bad netstring length"},
		{"socketmap no comma", serveSocketmap, "5:hello;", "", "without its comma"},
		{"socketmap cut short", serveSocketmap, "23:tls_policy bank", "", "EOF"},
		{"policy one", servePolicy, req, "action=DUNNO\n\n", ""},
		{"policy pipelined", servePolicy, req + req, "action=DUNNO\n\naction=DUNNO\n\n", ""},
		{"policy cut short", servePolicy, "request=smtpd_access_policy\nsender=a@b", "", "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := tc.serve(bufio.NewReaderSize(strings.NewReader(tc.in), bufSize), &out)
			if out.String() != tc.want {
				t.Errorf("wrote %q, want %q", out.String(), tc.want)
			}
			want := tc.wantErr
			if want == "" {
				want = "EOF"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want one containing %q", err, want)
			}
		})
	}
}

// TestLoopback answers requests over real connections, one reply at a time
// as Postfix reads them.
func TestLoopback(t *testing.T) {
	for _, tc := range []struct {
		serve     func(*bufio.Reader, io.Writer) error
		req, want string
	}{
		{serveSocketmap, "23:tls_policy bank.example,", "9:NOTFOUND ,"},
		{servePolicy, "request=smtpd_access_policy\nsender=a@b.example\n\n", "action=DUNNO\n\n"},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = acceptLoop(ln, tc.serve) }()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(tc.want))
		for range 3 {
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != tc.want {
				t.Fatalf("got %q, %v; want %q", buf, err, tc.want)
			}
		}
		c.Close()
		ln.Close()
	}
}
