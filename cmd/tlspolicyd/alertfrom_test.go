package main

import (
	"bufio"
	"io"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// senderRelay is an SMTP relay that records the envelope senders and
// From: headers it is given.
type senderRelay struct {
	mu    sync.Mutex
	froms []string // "envelope|header"
}

type senderSession struct {
	r    *senderRelay
	from string
}

func (s *senderSession) AuthPlain(string, string) error              { return nil }
func (s *senderSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *senderSession) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (s *senderSession) Reset()                                      {}
func (s *senderSession) Logout() error                               { return nil }
func (s *senderSession) Data(r io.Reader) error {
	hdr := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if h, ok := strings.CutPrefix(sc.Text(), "From: "); ok && hdr == "" {
			hdr = h
		}
	}
	s.r.mu.Lock()
	s.r.froms = append(s.r.froms, s.from+"|"+hdr)
	s.r.mu.Unlock()
	return nil
}

func (r *senderRelay) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.froms...)
}

func startSenderRelay(t *testing.T) (*senderRelay, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &senderRelay{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &senderSession{r: r}, nil }))
	srv.Domain = "relay.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r, l.Addr().String()
}

// TestServeAlertFrom: alerts.from (--alert-from) is the sender of alert
// mail, in the envelope and the From: header.
func TestServeAlertFrom(t *testing.T) {
	relay, addr := startSenderRelay(t)
	// Registered before serve starts, so it runs after serve has stopped
	// and flushed its pending alerts.
	t.Cleanup(func() {
		got := relay.got()
		if len(got) == 0 {
			t.Fatal("no alert mail reached the relay")
		}
		for _, g := range got {
			if g != "alerts@mx1.ourcorp.example|alerts@mx1.ourcorp.example" {
				t.Errorf("alert mail from (envelope|header) %q, want alerts@mx1.ourcorp.example for both", g)
			}
		}
	})
	addrs := startServe(t, []string{"policyd"},
		"--table", "testdata/table", "--socketmap", "", "--policyd", "127.0.0.1:0", "--http", "",
		"--probe-cache", "", "--resolver", "127.0.0.1:1", "--event-log", filepath.Join(t.TempDir(), "events.jsonl"),
		"--alert-mail-to", "postmaster@ourcorp.example", "--alert-smtp", addr, "--alert-from", "alerts@mx1.ourcorp.example")
	conn, err := net.Dial("tcp", addrs["policyd"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@bank.example\nrecipient=u@ourcorp.example\nclient_address=192.0.2.1\nclient_name=mx.bank.example\n\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "action=450 ") {
		t.Fatalf("reply %q, %v; want a deferral", line, err)
	}
}
