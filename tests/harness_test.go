package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestHarnessPostmapStub checks the postmap runner against a stub socketmap
// server, one row per reply kind of docs/postfix.md's "Trying a lookup:
// postmap -q" table, so a failure of the daemon tests cannot be the harness's.
func TestHarnessPostmapStub(t *testing.T) {
	harness.RequirePostfix(t)
	stub := harness.NewStubSocketmap(t, map[string]string{
		"tls_policy ok.example":   "OK encrypt",
		"tls_policy temp.example": "TEMP try later",
		"tls_policy perm.example": "PERM unknown map",
	})
	conf := harness.PostmapConfig(t)
	spec := harness.SocketmapSpec(stub.Addr, "tls_policy")
	closed := harness.SocketmapSpec("127.0.0.1:"+itoa(harness.FreePort(t, "127.0.0.1")), "tls_policy")

	tests := []struct {
		name, key, spec string
		stdout          string
		code            int
		stderr          []string // substrings, in any order
	}{
		{"ok", "ok.example", spec, "encrypt\n", 0, nil},
		{"notfound", "nx.example", spec, "", 1, nil},
		{"temp", "temp.example", spec, "", 1, []string{"socketmap server temporary error: try later", "postmap: fatal: table " + spec + ": query error"}},
		{"perm", "perm.example", spec, "", 1, []string{"socketmap server permanent error: unknown map", "postmap: fatal:"}},
		{"nothing listening", "ok.example", closed, "", 1, []string{"Connection refused", "postmap: fatal:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // every error answer costs postmap a 1 s sleep before exit
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := harness.Postmap(ctx, conf, tc.key, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stdout != tc.stdout || res.Code != tc.code {
				t.Errorf("postmap -q %s: got %s; want stdout %q exit %d", tc.key, res, tc.stdout, tc.code)
			}
			if tc.stderr == nil && res.Stderr != "" {
				t.Errorf("postmap -q %s: unexpected stderr %q", tc.key, res.Stderr)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(res.Stderr, want) {
					t.Errorf("postmap -q %s: stderr %q lacks %q", tc.key, res.Stderr, want)
				}
			}
		})
	}
	t.Run("request sent", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// postmap sends the map name as configured and the key verbatim.
		if _, err := harness.Postmap(ctx, conf, "Key.Example.", harness.SocketmapSpec(stub.Addr, "Other_Map")); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range stub.Requests() {
			found = found || r == "Other_Map Key.Example."
		}
		if !found {
			t.Errorf("stub requests %q lack %q", stub.Requests(), "Other_Map Key.Example.")
		}
	})
}

// TestHarnessPostfixStub checks the throwaway instance, the hosts-file
// routing and the fake MX against the stub: a stub "encrypt" answer defers
// mail to the MX without STARTTLS, an unlisted domain is delivered.
func TestHarnessPostfixStub(t *testing.T) {
	harness.RequirePostfix(t)
	mx := harness.NewFakeMX(t, "127.0.0.2")
	stub := harness.NewStubSocketmap(t, map[string]string{"tls_policy enforced.example": "OK encrypt"})
	pf := harness.NewPostfix(t, harness.PostfixConfig{
		Socketmap: stub.Addr,
		MXPort:    mx.Port,
		Hosts:     map[string]string{"enforced.example": mx.Host, "open.example": mx.Host},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	deferred, err := pf.Send(ctx, "sender@origin.example", []string{"a@enforced.example"}, "enforced")
	if err != nil {
		t.Fatal(err)
	}
	open, err := pf.Send(ctx, "sender@origin.example", []string{"b@open.example"}, "open")
	if err != nil {
		t.Fatal(err)
	}

	r, err := pf.WaitDeferred(ctx, deferred, "a@enforced.example", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "TLS is required, but was not offered by host enforced.example[127.0.0.2]"; !strings.Contains(r.DelayReason, want) {
		t.Errorf("delay_reason %q, want it to contain %q", r.DelayReason, want)
	}
	if err := pf.WaitGone(ctx, open, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := mx.ReceivedFor("b@open.example"); len(got) != 1 {
		t.Errorf("fake MX got %d messages for b@open.example, want 1", len(got))
	}
	if got := mx.ReceivedFor("a@enforced.example"); len(got) != 0 {
		t.Errorf("fake MX got a message for a@enforced.example despite encrypt: %+v", got)
	}
	reqs := strings.Join(stub.Requests(), "|")
	for _, want := range []string{"tls_policy enforced.example", "tls_transport a@enforced.example"} {
		if !strings.Contains(reqs, want) {
			t.Errorf("stub never asked %q; requests: %s", want, reqs)
		}
	}
}
