package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeInboundCountsSurviveRestart: the per-sender-domain inbound
// counts of /api/inbound and /api/report are kept beside the event log:
// after a restart they are still there, counted since the first start.
func TestServeInboundCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--table", "testdata/table", "--socketmap", "", "--policyd", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--resolver", "127.0.0.1:1", "--event-log", filepath.Join(dir, "events.jsonl")}
	type inbound struct {
		CountedSince time.Time `json:"counted_since"`
		Domains      []struct {
			Domain     string            `json:"domain"`
			WithTLS    uint64            `json:"with_tls"`
			WithoutTLS uint64            `json:"without_tls"`
			Versions   map[string]uint64 `json:"versions"`
		} `json:"domains"`
	}
	counts := func(t *testing.T, addr string) (time.Time, string) {
		var v inbound
		_, body := get(t, "http://"+addr+"/api/inbound")
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, d := range v.Domains {
			s = append(s, fmt.Sprintf("%s %d/%d %v", d.Domain, d.WithTLS, d.WithoutTLS, d.Versions))
		}
		return v.CountedSince, strings.Join(s, "; ")
	}
	var since time.Time
	want := "bank.example 1/1 map[TLSv1.3:1]"
	t.Run("first start", func(t *testing.T) {
		addrs := startServe(t, []string{"policyd", "http"}, args...)
		conn, err := net.Dial("tcp", addrs["policyd"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for i, proto := range []string{"", "TLSv1.3"} {
			req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@bank.example\nrecipient=u@ourcorp.example\n"+
				"client_address=192.0.2.1\nclient_name=mx.bank.example\ninstance=%d.test\nencryption_protocol=%s\n\n", i, proto)
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			_, _ = br.ReadString('\n')
		}
		var got string
		since, got = counts(t, addrs["http"])
		if got != want {
			t.Fatalf("counts %q, want %q", got, want)
		}
	})
	t.Run("after a restart", func(t *testing.T) {
		addrs := startServe(t, []string{"policyd", "http"}, args...)
		s, got := counts(t, addrs["http"])
		if got != want || !s.Equal(since) {
			t.Errorf("after restart: counts %q since %v; want %q since %v", got, s, want, since)
		}
		var rep struct {
			InboundSince time.Time `json:"inbound_since"`
		}
		if _, body := get(t, "http://"+addrs["http"]+"/api/report"); json.Unmarshal(body, &rep) != nil || !rep.InboundSince.Equal(since) {
			t.Errorf("report inbound_since %v, want %v", rep.InboundSince, since)
		}
	})
}
