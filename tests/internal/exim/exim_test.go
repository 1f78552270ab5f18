package exim

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseReplies(t *testing.T) {
	// The shape of exim -bh output: a banner of "****" lines, then the SMTP
	// replies, here a wrapped one with the enhanced code on every line.
	out := "\n**** SMTP testing session as if from host 198.51.100.7\n**** This is not for real!\n\n" +
		"220 mx.ourcorp.example ESMTP Exim 4.96\n" +
		"250-mx.ourcorp.example Hello client.example [198.51.100.7]\n250-SIZE 52428800\n250 HELP\n" +
		"250 OK\n" +
		"450-4.7.10 TLS 1.2 or newer is required for mail from bank.example (rule\n" +
		"450-4.7.10 bank-partners): the connection was not encrypted; ask the postmaster of\n" +
		"450 4.7.10 bank.example to enable STARTTLS\n" +
		"250 Accepted\n354 Enter message\n250 OK id=1xVQEq-0005fj-28\n\n" +
		"**** SMTP testing: that is not a real message id!\n\n221 mx.ourcorp.example closing connection\n"
	got := ParseReplies(out)
	codes := make([]int, len(got))
	for i, r := range got {
		codes[i] = r.Code
	}
	if want := []int{220, 250, 250, 450, 250, 354, 250, 221}; !reflect.DeepEqual(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	if n := len(got[1].Lines); n != 3 {
		t.Errorf("EHLO reply has %d lines, want 3", n)
	}
	wantText := "4.7.10 TLS 1.2 or newer is required for mail from bank.example (rule bank-partners): " +
		"the connection was not encrypted; ask the postmaster of bank.example to enable STARTTLS"
	if got[3].Text() != wantText {
		t.Errorf("wrapped reply text %q,\nwant %q", got[3].Text(), wantText)
	}
	if s := got[4].String(); s != "250 Accepted" {
		t.Errorf("String() = %q", s)
	}
}

func TestComplete(t *testing.T) {
	tests := []struct {
		req  string
		want bool
	}{
		{"", false},
		{"20:tls_policy x.example,", true},
		{"20:tls_policy x.example", false},
		{"20:tls_po", false},
		{"request=smtpd_access_policy\nsender=a@b\n\n", true},
		{"request=smtpd_access_policy\n", false},
		{"x:", false},
		{"99999999999:", false},
	}
	for _, tc := range tests {
		if got := complete([]byte(tc.req)); got != tc.want {
			t.Errorf("complete(%q) = %v, want %v", tc.req, got, tc.want)
		}
	}
}

// TestScripted talks to a Scripted server the way ${readsocket} does:
// write, half-close, read until the server closes.
func TestScripted(t *testing.T) {
	s := NewScripted(t, func(req string) Answer { return Answer{Reply: "got " + req} })
	reply, err := exchange(s.Addr, "10:tls_policy,")
	if err != nil {
		t.Fatal(err)
	}
	if reply != "got 10:tls_policy," {
		t.Errorf("reply %q", reply)
	}
	fwd := NewScripted(t, Forward(s.Addr))
	if reply, err = exchange(fwd.Addr, "action?\n\n"); err != nil || reply != "got action?\n\n" {
		t.Errorf("forwarded reply %q, %v", reply, err)
	}
	if got := s.Requests(); !reflect.DeepEqual(got, []string{"10:tls_policy,", "action?\n\n"}) {
		t.Errorf("requests %q", got)
	}

	t.Run("hang", func(t *testing.T) {
		h := NewScripted(t, Fixed(Answer{Reply: "partial", Hang: true}))
		c, err := net.Dial("tcp", h.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "1:x,")
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b, err := io.ReadAll(c)
		var ne net.Error
		if string(b) != "partial" || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("read %q, %v; want the partial reply and then a timeout (connection kept open)", b, err)
		}
	})
}

func TestFingerprint(t *testing.T) {
	der := []byte("not really a certificate")
	sum := sha256.Sum256(der)
	fp := Fingerprint(tls.Certificate{Certificate: [][]byte{der}})
	if len(fp) != 32*3-1 || strings.ToUpper(fp) != fp || fp[2] != ':' {
		t.Fatalf("Fingerprint = %q, want 32 upper-case hex pairs joined by colons", fp)
	}
	if strings.ReplaceAll(fp, ":", "") != strings.ToUpper(hex.EncodeToString(sum[:])) {
		t.Errorf("Fingerprint = %q, digest %x", fp, sum)
	}
}
