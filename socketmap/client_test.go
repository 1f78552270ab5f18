package socketmap

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		in      string
		want    Reply
		wantErr bool
	}{
		{in: "OK encrypt", want: Reply{StatusOK, "encrypt"}},
		{in: "OK secure match=a:b", want: Reply{StatusOK, "secure match=a:b"}},
		{in: "NOTFOUND ", want: Reply{StatusNotFound, ""}},
		{in: "NOTFOUND", want: Reply{StatusNotFound, ""}},
		{in: "TEMP store not loaded", want: Reply{StatusTemp, "store not loaded"}},
		{in: "TIMEOUT x", want: Reply{StatusTimeout, "x"}},
		{in: "PERM bad request", want: Reply{StatusPerm, "bad request"}},
		{in: "HUH what", wantErr: true},
		{in: "ok encrypt", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseReply([]byte(tt.in))
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseReply(%q) err = %v, want ErrMalformed", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseReply(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// TestClientRoundTrip runs every reply kind through Client against Server,
// over TCP and a unix socket.
func TestClientRoundTrip(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := startOn(t, network, &Server{Handler: &fakeHandler{}})
			if network == "unix" {
				addr = "unix:" + addr
			}
			cl, err := Dial(context.Background(), addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for key, want := range map[string]Reply{
				"bank.example":    {StatusOK, "secure match=nexthop"},
				"none.example":    {StatusNotFound, ""},
				"temp.example":    {StatusTemp, "store not loaded"},
				"timeout.example": {StatusTimeout, "probe pending"},
				"perm.example":    {StatusPerm, "unknown map"},
			} {
				got, err := cl.Lookup(context.Background(), "tls_policy", key)
				if err != nil || got != want {
					t.Errorf("Lookup(%q) = %+v, %v; want %+v", key, got, err, want)
				}
			}
			if _, err := cl.Lookup(context.Background(), "bad map", "k"); err == nil {
				t.Error("map name with a space accepted")
			}
		})
	}
}

func TestClientTimeoutAndCancel(t *testing.T) {
	// A server that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()

	cl, err := Dial(context.Background(), l.Addr().String(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	if _, err := cl.Lookup(context.Background(), "tls_policy", "x"); err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("Lookup on a silent server: err %v after %v, want a timeout after 200ms", err, time.Since(start))
	}

	cl2, err := Dial(context.Background(), l.Addr().String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := cl2.Lookup(ctx, "tls_policy", "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup after cancel: %v, want context.Canceled", err)
	}

	if _, err := Dial(context.Background(), "unix:/nonexistent/sock", time.Second); err == nil || !strings.Contains(err.Error(), "/nonexistent/sock") {
		t.Errorf("Dial to a missing socket: %v", err)
	}
}
